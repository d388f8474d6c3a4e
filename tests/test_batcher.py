"""The decoding loop (serve/batcher.py), driven step by step: a request's text is the same alone or among others
that join, leave and are cancelled around it, and is what sample.generate gives for the same seed; cancelled and
finished requests leave at once; limits, queueing, stop strings, shutdown and failures."""

import threading

import pytest
import torch

from charrnn.config import ModelConfig
from charrnn.model import CharRNN
from charrnn.sample import Sampling, generate, gumbel
from charrnn.serve import batcher as batcher_module
from charrnn.serve.batcher import Batcher, Busy, Job
from charrnn.stop import cut_at_stop
from charrnn.vocab import Vocab

VOCAB = Vocab(list("\n abcdefghij"))
HOW = Sampling(temperature=0.9, top_p=0.95)


@pytest.fixture(scope="module", params=["lstm", "mingru"])
def net(request: pytest.FixtureRequest) -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=len(VOCAB), cell=request.param, hidden_size=32, embedding_size=8)).eval()


def job(seed: int, length: int = 60, how: Sampling = HOW, n: int = 1, prefix=(1, 2, 3), stops=()) -> Job:
    return Job(torch.tensor(prefix), length, how, seed, n, tuple(stops))


def drain(batcher: Batcher, limit: int = 10_000) -> None:
    for _ in range(limit):
        if not batcher.step():
            return
    raise AssertionError("the batcher never became idle")


def texts(slot) -> list[str]:
    got, reasons = slot.take()
    assert all(r is not None for r in reasons)
    return got


def alone(net: CharRNN, j: Job) -> list[str]:
    batcher = Batcher(net, VOCAB)
    slot = batcher.submit(j)
    drain(batcher)
    return texts(slot)


def test_the_same_seed_gives_the_same_text_alone_and_under_load(net: CharRNN):
    mine = job(seed=5, length=150, n=2)
    batcher = Batcher(net, VOCAB)
    others = [batcher.submit(job(seed=i, length=40 + 30 * i, n=1 + i % 3, how=Sampling(top_k=3) if i % 2 else HOW,
                                 prefix=(4, 5))) for i in range(5)]
    for _ in range(7):
        batcher.step()
    slot = batcher.submit(mine)
    for step in range(1, 200):
        if step == 20:
            others[4].cancel()
        if step % 30 == 0:
            batcher.submit(job(seed=100 + step, length=25, n=3, how=Sampling(greedy=True)))
        batcher.step()
    drain(batcher)
    assert texts(slot) == alone(net, mine)


@pytest.mark.parametrize("how", [HOW, Sampling(greedy=True), Sampling(temperature=1.3, top_k=4)])
def test_a_request_gives_what_sample_generate_gives(net: CharRNN, how: Sampling):
    got = alone(net, job(seed=11, length=120, how=how, n=2))
    tokens = torch.stack(list(generate(net, torch.tensor([1, 2, 3]), 120, how, torch.Generator().manual_seed(11), 2)))
    assert got == [VOCAB.decode(row) for row in tokens.T.tolist()]


def test_the_adaptive_output_layer_gives_what_sample_generate_gives():
    torch.manual_seed(1)
    adaptive = CharRNN(ModelConfig(vocab_size=len(VOCAB), hidden_size=32, embedding_size=8, cutoffs=(4, 8))).eval()
    got = alone(adaptive, job(seed=4, length=80, n=2))
    tokens = torch.stack(list(generate(adaptive, torch.tensor([1, 2, 3]), 80, HOW, torch.Generator().manual_seed(4),
                                       2)))
    assert got == [VOCAB.decode(row) for row in tokens.T.tolist()]


def test_noise_comes_in_bounded_blocks_that_do_not_change_the_text(net: CharRNN, monkeypatch: pytest.MonkeyPatch):
    drawn = []
    monkeypatch.setattr(batcher_module, "SLOT_NOISE", 40)  # 40 numbers: one step of 3 x 12 at a time
    monkeypatch.setattr(batcher_module, "gumbel", lambda shape, *rest: drawn.append(shape) or gumbel(shape, *rest))
    got = alone(net, job(seed=11, length=50, n=3))
    tokens = torch.stack(list(generate(net, torch.tensor([1, 2, 3]), 50, HOW, torch.Generator().manual_seed(11), 3)))
    assert got == [VOCAB.decode(row) for row in tokens.T.tolist()]
    assert set(drawn) == {(1, 3, len(VOCAB))}


def test_a_cancelled_request_leaves_at_once(net: CharRNN):
    batcher = Batcher(net, VOCAB)
    keep, leave = batcher.submit(job(1, length=100)), batcher.submit(job(2, length=100, n=5))
    for _ in range(3):
        batcher.step()
    assert batcher.active == 2 and batcher.streams == 6 and batcher.lanes.rows == 8
    leave.cancel()
    assert batcher.active == 1 and batcher.streams == 1  # before the decoder even runs again
    batcher.step()
    assert batcher.lanes.rows == batcher.lanes.lanes and batcher.owner == [keep]
    drain(batcher)
    assert texts(keep) == alone(net, job(1, length=100))


def test_limits_and_queueing(net: CharRNN):
    batcher = Batcher(net, VOCAB, max_streams=4)
    first = batcher.submit(job(1, n=3))
    with pytest.raises(Busy, match="3 streams are running and it takes at most 4 at once"):
        batcher.submit(job(2, n=2))
    first.cancel()
    batcher.submit(job(2, n=2))  # room again at once
    one_at_a_time = Batcher(net, VOCAB, max_running=1, lanes=1)
    a, b = one_at_a_time.submit(job(7, length=30)), one_at_a_time.submit(job(8, length=30))
    one_at_a_time.step()
    assert one_at_a_time.running == [a] and b.take() == ([""], [None])
    drain(one_at_a_time)
    assert texts(b) == alone(net, job(8, length=30))


def test_stop_strings_end_each_sample_on_its_own(net: CharRNN):
    whole = alone(net, job(3, length=150, n=3))
    stop = whole[0][30:32]
    slot_batcher = Batcher(net, VOCAB)
    slot = slot_batcher.submit(job(3, length=150, n=3, stops=[stop]))
    drain(slot_batcher)
    got, reasons = slot.take()
    assert got == [cut_at_stop(w, [stop])[0] for w in whole]
    assert reasons == ["stop" if stop in w else "length" for w in whole] and reasons[0] == "stop"


def test_length_zero_finishes_at_once(net: CharRNN):
    batcher = Batcher(net, VOCAB)
    slot = batcher.submit(job(1, length=0, n=2))
    assert not batcher.step()
    assert slot.take() == (["", ""], ["length", "length"]) and batcher.active == 0


def test_closing_ends_every_request(net: CharRNN):
    batcher = Batcher(net, VOCAB, max_running=1)
    running, waiting = batcher.submit(job(1, length=1000)), batcher.submit(job(2))
    batcher.step()
    batcher.close()
    assert running.take()[1] == ["shutdown"] and waiting.take() == ([""], ["shutdown"])
    assert batcher.active == 0
    with pytest.raises(Busy, match="shutting down"):
        batcher.submit(job(3))


def collect(slot) -> tuple[list[str], list[str | None]]:
    """Read a slot the way the server does, blocking until there is more, to the end."""
    texts = [""] * slot.job.num_samples
    while True:
        assert slot.wait(10)
        new, reasons = slot.take()
        texts = [t + n for t, n in zip(texts, new, strict=True)]
        if all(r is not None for r in reasons):
            return texts, reasons


def test_the_thread_runs_calls_between_steps_and_a_failure_ends_only_the_requests_running(
        net: CharRNN, monkeypatch: pytest.MonkeyPatch):
    batcher = Batcher(net, VOCAB)
    batcher.start()
    try:
        assert batcher.call(threading.current_thread).result(10).name == "charrnn-decoder"
        monkeypatch.setattr(batcher.lanes, "step", lambda tokens: 1 / 0)
        slot = batcher.submit(job(1, length=50))
        assert collect(slot)[1] == ["error"] and "division by zero" in slot.error
        monkeypatch.undo()
        assert collect(batcher.submit(job(1, length=50)))[0] == alone(net, job(1, length=50))
    finally:
        batcher.close()
