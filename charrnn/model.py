"""CharRNN: character embedding, a recurrent core from torch.nn, and an output layer over the vocabulary.

The model does no I/O: ``forward(idx, state) -> (logits, state)``, or with ``targets`` the cross-entropy of
every position, ``-> (nll, state)``. The output layer is a plain linear layer and softmax, or for large
vocabularies an exact adaptive softmax (``AdaptiveHead``) that is much cheaper for rare characters.
Shapes: B batch, T time, E embedding, H hidden, L layers, V vocabulary, N rows (B*T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from charrnn.config import ModelConfig
from charrnn.minrnn import MinRNN

# The recurrent state: h of shape (L, B, H), or (h, c) for an LSTM.
State = torch.Tensor | tuple[torch.Tensor, ...]

_CORES = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
MIN_CELLS = ("mingru", "minlstm")  # parallel-scan cells, see minrnn.py


class CharRNN(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embedding_size)
        if config.cell in MIN_CELLS:
            self.rnn = MinRNN(config.cell, config.embedding_size, config.hidden_size, config.num_layers,
                              config.dropout)
        else:
            core = _CORES[config.cell]
            kwargs = {"nonlinearity": "tanh"} if config.cell == "rnn" else {}
            self.rnn = core(
                config.embedding_size,
                config.hidden_size,
                num_layers=config.num_layers,
                dropout=config.dropout if config.num_layers > 1 else 0.0,
                batch_first=True,
                **kwargs,
            )
        self.drop = nn.Dropout(config.dropout)
        self.head: nn.Linear | AdaptiveHead
        if config.cutoffs:
            self.head = AdaptiveHead(config.hidden_size, config.vocab_size, config.cutoffs)
        else:
            self.head = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, idx: torch.Tensor, state: State | None = None,
                targets: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        """Next-character logits (B, T, V) — log-probabilities with the adaptive head — or, given ``targets``
        (B, T), the cross-entropy in nats at every position (B, T), zero where the target is negative."""
        x = self.embed(idx)  # (B, T, E)
        out, state = self.rnn(x, state)  # (B, T, H)
        out = self.drop(out)
        if targets is None:
            return self.logits(out), state
        if isinstance(self.head, AdaptiveHead):
            return self.head.nll(out.flatten(0, 1), targets.flatten()).view_as(targets), state
        logits = self.head(out).flatten(0, 1).float()  # (N, V)
        return F.cross_entropy(logits, targets.flatten(), ignore_index=-1, reduction="none").view_as(targets), state

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        """The output layer on recurrent outputs (..., H) -> (..., V)."""
        if isinstance(self.head, AdaptiveHead):
            return self.head.log_prob(out.flatten(0, -2)).view(*out.shape[:-1], -1)
        return self.head(out)


class AdaptiveHead(nn.Module):
    """An exact softmax over V characters that is cheap for rare ones (adaptive softmax, Grave et al. 2017).

    Characters are ranked by training frequency (``rank``: vocabulary id -> rank, a permutation stored with the
    weights). The ``cutoffs[0]`` most frequent ones and one entry per cluster of rarer ones share the head
    softmax; a character in cluster i gets p(cluster i) * p(character | cluster i), the second factor from a
    projection of the hidden vector to H / 4^(i+1) dimensions. Every probability is exact and they sum to one,
    so losses and bits per character compare with the full softmax's; a character's cost is that of the head
    plus, for rare ones only, of their (small) cluster."""

    def __init__(self, hidden_size: int, vocab_size: int, cutoffs: tuple[int, ...]) -> None:
        super().__init__()
        self.bounds = (*cutoffs, vocab_size)  # rank ranges: [0, c0) head, [c0, c1) cluster 1, ...
        shortlist, clusters = cutoffs[0], len(cutoffs)
        self.head = nn.Linear(hidden_size, shortlist + clusters)
        self.tail = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden_size, size, bias=False), nn.Linear(size, hi - lo))
            for size, lo, hi in zip(tail_sizes(hidden_size, clusters), self.bounds, self.bounds[1:], strict=False))
        self.register_buffer("rank", torch.arange(vocab_size))

    def nll(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (N,) of targets (N,) given hidden vectors x (N, H); zero where the target is negative."""
        keep = targets >= 0
        r = self.rank[targets.clamp(min=0)]  # (N,) frequency ranks
        cluster = torch.bucketize(r, torch.tensor(self.bounds[:-1], device=r.device), right=True)  # 0: shortlist
        column = torch.where(cluster == 0, r, self.bounds[0] + cluster - 1)
        logp = F.log_softmax(self.head(x).float(), dim=-1).gather(1, column.unsqueeze(1)).squeeze(1)  # (N,)
        for i, tail in enumerate(self.tail, start=1):
            rows = (cluster == i).nonzero().squeeze(1)  # may be empty: every parameter still gets a gradient
            within = F.log_softmax(tail(x[rows]).float(), dim=-1)  # (n_i, size of cluster i)
            picked = within.gather(1, (r[rows] - self.bounds[i - 1]).unsqueeze(1)).squeeze(1)
            logp = logp.index_add(0, rows, picked)
        return torch.where(keep, -logp, 0.0)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (N, V) of every character, in vocabulary order, given x (N, H)."""
        head = F.log_softmax(self.head(x).float(), dim=-1)  # (N, c0 + clusters)
        shortlist = self.bounds[0]
        parts = [head[:, :shortlist]]
        for i, tail in enumerate(self.tail):
            parts.append(head[:, shortlist + i : shortlist + i + 1] + F.log_softmax(tail(x).float(), dim=-1))
        return torch.cat(parts, dim=1).index_select(1, self.rank)  # rank order -> vocabulary order


def tail_sizes(hidden_size: int, clusters: int) -> list[int]:
    """Width of each cluster's projection: H/4, H/16, ... (at least 1)."""
    return [max(1, hidden_size // 4 ** (i + 1)) for i in range(clusters)]


SHORTLIST_SHARE = 0.9  # of the training characters, at least, are in the adaptive head's shortlist
CLUSTER_COST = 8192  # multiply-adds a cluster costs per character beyond its arithmetic (indexing, launches)


def choose_cutoffs(counts: torch.Tensor, hidden_size: int) -> tuple[int, ...]:
    """The adaptive head's cutoffs (shortlist size, then cluster boundaries, in frequency ranks) that minimise
    the expected output-layer work per training character, given each character's count (V,); () where no
    shortlist of a power of two below V covers SHORTLIST_SHARE of the text (then the full softmax is as cheap)."""
    mass = counts.double().sort(descending=True).values
    mass = (mass / mass.sum().clamp(min=1)).cumsum(0)  # mass[r - 1]: share of characters ranked below r
    vocab = len(counts)

    def cost(cuts: tuple[int, ...]) -> float:
        bounds = (*cuts, vocab)
        total = hidden_size * (cuts[0] + len(cuts))
        for size, lo, hi in zip(tail_sizes(hidden_size, len(cuts)), bounds, bounds[1:], strict=False):
            share = float(mass[hi - 1] - mass[lo - 1])
            total += share * (hidden_size * size + size * (hi - lo)) + CLUSTER_COST
        return total

    # the shortlist covers most of the text, so that most predictions use the whole hidden vector (quality), and
    # only the rare rest pays for the cheaper, narrower cluster projections
    firsts = [c for c in (2 ** k for k in range(5, 13)) if c < vocab and float(mass[c - 1]) >= SHORTLIST_SHARE]
    options = [(c,) for c in firsts] + [(c, d) for c in firsts for d in (4 * c, 16 * c) if d < vocab]
    return min(options, key=cost, default=())


def frequency_rank(counts: torch.Tensor) -> torch.Tensor:
    """Each character's rank by count, most frequent first (ties by id): the adaptive head's ``rank``."""
    order = torch.sort(-counts.long(), stable=True).indices  # rank -> id
    return torch.empty_like(order).scatter_(0, order, torch.arange(len(order)))  # id -> rank


def detach_state(state: State | None, keep: torch.Tensor | None = None) -> State | None:
    """Cut the graph at a batch boundary: the values carry over, in fp32 (bf16 autocast returns a bf16 state, which
    an fp32 step's LSTM refuses and a checkpoint must not hold), the gradients do not.
    Where the boolean ``keep`` is False the state is zeroed instead (as if starting afresh)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(detach_state(s, keep) for s in state)
    state = state.detach().float()
    return state if keep is None else torch.where(keep, state, torch.zeros((), device=state.device))


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def widen_vocab(weights: dict[str, torch.Tensor], vocab_size: int) -> dict[str, torch.Tensor]:
    """Weights for a larger vocabulary whose first ids are the old ones. New characters get fresh
    embeddings and an output row that predicts them rarely (zero weights, the smallest old bias); with the
    adaptive head they join the rarest cluster, ranked after every old character."""
    emb = weights["embed.weight"]
    old = emb.shape[0]
    extra = vocab_size - old
    out = "head.weight"
    if "head.rank" in weights:  # adaptive: the last cluster's output layer grows
        out = max(k for k in weights if k.startswith("head.tail.") and k.endswith(".1.weight"))
        weights = {**weights, "head.rank": torch.cat([weights["head.rank"], torch.arange(old, vocab_size)])}
    w, b = weights[out], weights[out.removesuffix("weight") + "bias"]
    return {
        **weights,
        "embed.weight": torch.cat([emb, torch.randn(extra, emb.shape[1], dtype=emb.dtype)]),
        out: torch.cat([w, torch.zeros(extra, w.shape[1], dtype=w.dtype)]),
        out.removesuffix("weight") + "bias": torch.cat([b, b.min().expand(extra)]),
    }
