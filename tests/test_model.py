import pytest
import torch
import torch.nn.functional as F

from charrnn.config import ModelConfig
from charrnn.model import CharRNN, choose_cutoffs, detach_state, frequency_rank, num_parameters, widen_vocab


def naive_rnn(model: CharRNN, idx: torch.Tensor) -> torch.Tensor:
    """H_t = tanh(X_t W_xh + H_{t-1} W_hh + b), step by step, layer by layer, from the book."""
    x = model.embed(idx)  # (B, T, E)
    for layer in range(model.config.num_layers):
        w_xh = getattr(model.rnn, f"weight_ih_l{layer}").T
        w_hh = getattr(model.rnn, f"weight_hh_l{layer}").T
        b = getattr(model.rnn, f"bias_ih_l{layer}") + getattr(model.rnn, f"bias_hh_l{layer}")
        h = torch.zeros(x.shape[0], model.config.hidden_size)
        outs = []
        for t in range(x.shape[1]):
            h = torch.tanh(x[:, t] @ w_xh + h @ w_hh + b)
            outs.append(h)
        x = torch.stack(outs, dim=1)
    return model.head(x)


def test_plain_rnn_matches_the_equations():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, cell="rnn", embedding_size=5, hidden_size=7, num_layers=2))
    idx = torch.randint(11, (3, 9))
    logits, _ = model(idx)
    torch.testing.assert_close(logits, naive_rnn(model, idx))


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm", "mingru", "minlstm"])
def test_whole_sequence_equals_halves_with_state_carried(cell: str):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=13, cell=cell, embedding_size=4, hidden_size=6, num_layers=2))
    idx = torch.randint(13, (2, 10))
    whole, _ = model(idx)
    first, state = model(idx[:, :4])
    second, _ = model(idx[:, 4:], detach_state(state))
    torch.testing.assert_close(whole, torch.cat([first, second], dim=1))


def test_shapes_and_state():
    model = CharRNN(ModelConfig(vocab_size=5, cell="lstm", embedding_size=3, hidden_size=4, num_layers=3))
    logits, (h, c) = model(torch.zeros(2, 7, dtype=torch.long))
    assert logits.shape == (2, 7, 5)
    assert h.shape == c.shape == (3, 2, 4)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=5, hidden_size=8, num_layers=2, dropout=0.5)).eval()
    idx = torch.randint(5, (2, 6))
    torch.testing.assert_close(model(idx)[0], model(idx)[0])


def test_detach_state_keeps_values_cuts_gradients_and_zeroes_reset_rows():
    h = torch.randn(2, 3, 4, requires_grad=True)  # (L, B, H)
    c = torch.randn(2, 3, 4, requires_grad=True)
    keep = torch.tensor([True, False, True])[None, :, None]
    out = detach_state(h)
    assert torch.equal(out, h) and not out.requires_grad
    out_h, out_c = detach_state((h, c), keep)  # an LSTM's (h, c)
    for got, want in ((out_h, h), (out_c, c)):
        assert not got.requires_grad
        assert torch.equal(got[:, [0, 2]], want[:, [0, 2]]) and (got[:, 1] == 0).all()
    assert detach_state(None) is None


def test_num_parameters():
    model = CharRNN(ModelConfig(vocab_size=5, cell="gru", embedding_size=3, hidden_size=4, num_layers=1))
    assert num_parameters(model) == 5 * 3 + 3 * (3 * 4 + 4 * 4 + 4 + 4) + 4 * 5 + 5


def test_widened_vocabulary_keeps_the_old_predictions():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=5, embedding_size=3, hidden_size=4, num_layers=1)).eval()
    weights = widen_vocab(model.state_dict(), 7)
    wide = CharRNN(ModelConfig(vocab_size=7, embedding_size=3, hidden_size=4, num_layers=1)).eval()
    wide.load_state_dict(weights)
    idx = torch.randint(5, (2, 6))
    old, new = model(idx)[0], wide(idx)[0]
    torch.testing.assert_close(new[..., :5], old, rtol=0, atol=0)
    bias = model.head.bias.min()
    assert (new[..., 5:] == bias).all()  # new characters: zero weights, the smallest old bias
    assert torch.equal(weights["embed.weight"][:5], model.embed.weight)
    assert weights["embed.weight"].shape == (7, 3) and weights["embed.weight"][5:].std() > 0


def test_one_layer_has_no_inter_layer_dropout_and_batch_comes_first():
    model = CharRNN(ModelConfig(vocab_size=5, cell="lstm", embedding_size=3, hidden_size=4, num_layers=1,
                                dropout=0.3))
    assert model.rnn.dropout == 0.0 and model.rnn.batch_first and model.drop.p == 0.3
    deep = CharRNN(ModelConfig(vocab_size=5, cell="gru", embedding_size=3, hidden_size=4, num_layers=2, dropout=0.3))
    assert deep.rnn.dropout == 0.3


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_min_cells_shapes(cell: str):
    model = CharRNN(ModelConfig(vocab_size=5, cell=cell, embedding_size=3, hidden_size=4, num_layers=3, dropout=0.2))
    logits, h = model(torch.zeros(2, 7, dtype=torch.long))
    assert logits.shape == (2, 7, 5) and h.shape == (3, 2, 4)
    assert len(model.rnn.blocks) == 3 and model.rnn.blocks[0].cell.kind == cell and model.rnn.blocks[0].drop.p == 0.2


def test_widening_keeps_the_weights_dtype():
    model = CharRNN(ModelConfig(vocab_size=5, embedding_size=3, hidden_size=4, num_layers=1))
    weights = widen_vocab({k: v.bfloat16() for k, v in model.state_dict().items()}, 6)
    assert {v.dtype for v in weights.values()} == {torch.bfloat16}


def adaptive_model(vocab: int = 300, hidden: int = 16, seed: int = 0) -> CharRNN:
    torch.manual_seed(seed)
    counts = (torch.randint(1, 1000, (vocab,)) ** 2).long()
    model = CharRNN(ModelConfig(vocab_size=vocab, embedding_size=8, hidden_size=hidden, num_layers=1,
                                cutoffs=(32, 128)))
    model.head.rank.copy_(frequency_rank(counts))
    return model


def test_the_adaptive_head_is_an_exact_distribution_and_its_loss_is_its_cross_entropy():
    model = adaptive_model()
    idx, targets = torch.randint(300, (3, 9)), torch.randint(300, (3, 9))
    targets[0, :2] = -1  # not counted
    logp, _ = model(idx)  # (B, T, V) log-probabilities
    torch.testing.assert_close(logp.logsumexp(-1), torch.zeros(3, 9), atol=1e-5, rtol=0)
    nll, _ = model(idx, targets=targets)
    expected = F.cross_entropy(logp.flatten(0, 1), targets.flatten(), ignore_index=-1, reduction="none")
    torch.testing.assert_close(nll, expected.view(3, 9))
    assert (nll[0, :2] == 0).all()
    ranked = logp[0, 0].index_select(0, torch.sort(model.head.rank).indices)  # in rank order
    assert ranked.shape == (300,) and model.head.bounds == (32, 128, 300)


def test_the_adaptive_head_gives_every_parameter_a_gradient_even_with_an_empty_cluster():
    """A batch without rare characters must still give the rare clusters' weights a (zero) gradient: distributed
    training reduces every gradient and would wait forever for a missing one."""
    model = adaptive_model()
    frequent = torch.sort(model.head.rank).indices[:32]  # the shortlist's characters only
    nll, _ = model(torch.randint(300, (2, 5)), targets=frequent[torch.randint(32, (2, 5))])
    nll.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.head.tail[1][1].weight.grad.abs().sum() == 0


def test_cutoffs_fit_the_frequencies_and_small_vocabularies_keep_the_full_softmax():
    zipf = torch.tensor([int(1e6 / r) for r in range(1, 6001)])
    cuts = choose_cutoffs(zipf, 256)
    assert len(cuts) >= 1 and cuts[0] < 6000 and list(cuts) == sorted(cuts)
    assert choose_cutoffs(torch.ones(20, dtype=torch.long), 256) == ()  # too few characters for clusters
    assert frequency_rank(torch.tensor([5, 9, 5, 1])).tolist() == [1, 0, 2, 3]  # ties keep id order


def test_widening_the_adaptive_head_keeps_the_old_probabilities_nearly_and_ranks_new_characters_last():
    model = adaptive_model().eval()
    weights = widen_vocab(model.state_dict(), 303)
    wide = CharRNN(ModelConfig(vocab_size=303, embedding_size=8, hidden_size=16, num_layers=1, cutoffs=(32, 128)))
    wide.load_state_dict(weights)
    wide.eval()
    assert wide.head.rank[300:].tolist() == [300, 301, 302]
    idx = torch.randint(300, (2, 6))
    old, new = model(idx)[0], wide(idx)[0]
    short = torch.sort(model.head.rank).indices[:32]
    torch.testing.assert_close(new[..., short], old[..., short])  # the shortlist does not change at all
    assert new.logsumexp(-1).abs().max() < 1e-5
