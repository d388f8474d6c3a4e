import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn.data import RandomBatches, SequentialBatches, make_batches, split
from charrnn.errors import CharRNNError


@given(n=st.integers(2, 10_000), frac=st.floats(0.01, 0.99))
def test_split_sizes_are_consistent(n: int, frac: float):
    tokens = np.arange(n)
    try:
        train, val = split(tokens, frac)
    except CharRNNError:
        return
    assert len(train) + len(val) == n
    assert len(train) >= 2 and len(val) >= 2
    assert train[-1] + 1 == val[0]  # validation is the tail, never trained on


@settings(max_examples=50, deadline=None)
@given(n=st.integers(50, 3000), batch=st.integers(1, 8), seq=st.integers(1, 20))
def test_sequential_windows_and_labels_align(n: int, batch: int, seq: int):
    tokens = np.arange(n, dtype=np.int64)
    try:
        stream = SequentialBatches(tokens, batch, seq)
    except CharRNNError:
        assert (n - 1) // batch < seq
        return
    prev = None
    for _ in range(2 * stream.batches_per_epoch + 1):
        b = next(stream)
        assert b.x.shape == b.y.shape == (batch, seq)
        assert (b.y == b.x + 1).all()  # labels are the inputs shifted by one
        assert int(b.y.max()) < n
        assert (b.y[:, -1].numpy() <= stream.starts + stream.stream_len).all()  # never into the next stream
        if prev is not None and not b.reset:
            assert (b.x[:, 0] == prev.x[:, -1] + 1).all()  # each row continues its stream
        prev = b


def test_sequential_streams_are_disjoint_and_reset_each_epoch():
    tokens = np.arange(1000)
    stream = SequentialBatches(tokens, 4, 10)
    epoch = [next(stream) for _ in range(stream.batches_per_epoch)]
    assert [b.reset for b in epoch] == [True] + [False] * (len(epoch) - 1)
    seen = np.concatenate([b.x.numpy().ravel() for b in epoch])
    assert len(np.unique(seen)) == len(seen)
    assert next(stream).reset and stream.epoch == 1


def test_later_epochs_shift_the_windows():
    offsets = set()
    for seed in range(8):
        stream = SequentialBatches(np.arange(1000), 4, 10, seed=seed)
        stream._start_epoch(1)
        offsets.add(stream.offset)
        first = next(stream)
        assert first.reset and int(first.x[0, 0]) == stream.offset
    assert len(offsets) > 1


def test_sequential_ranks_take_disjoint_streams():
    tokens = np.arange(1000)
    a = next(SequentialBatches(tokens, 2, 10, rank=0, world_size=2))
    b = next(SequentialBatches(tokens, 2, 10, rank=1, world_size=2))
    whole = next(SequentialBatches(tokens, 4, 10))
    assert (np.concatenate([a.x, b.x]) == whole.x.numpy()).all()


def test_random_batches_are_aligned_seeded_and_resumable():
    tokens = np.arange(500)
    a, b = RandomBatches(tokens, 8, 12, seed=3), RandomBatches(tokens, 8, 12, seed=3)
    first = next(a)
    assert (first.y == first.x + 1).all() and first.reset
    assert (next(b).x == first.x).all()
    state = a.state_dict()
    after = next(a)
    b.load_state_dict(state)
    assert (next(b).x == after.x).all()


def test_too_short_for_the_batch():
    with pytest.raises(CharRNNError, match="too short"):
        SequentialBatches(np.arange(50), 8, 16)
    with pytest.raises(CharRNNError, match="shorter than seq_len"):
        RandomBatches(np.arange(10), 8, 16, seed=0)


@pytest.mark.parametrize(("n", "frac", "sizes"), [(100, 0.1, (90, 10)), (30, 0.05, (28, 2)), (4, 0.5, (2, 2)),
                                                  (20, 0.9, (2, 18)), (3, 0.5, None), (40, 0.01, None),
                                                  (10, 0.9, None)])
def test_split_exact_sizes_at_the_limits(n: int, frac: float, sizes: tuple[int, int] | None):
    if sizes is None:
        with pytest.raises(CharRNNError, match="too short to split"):
            split(np.arange(n), frac)
        return
    train, val = split(np.arange(n), frac)
    assert (len(train), len(val)) == sizes
    assert (np.concatenate([train, val]) == np.arange(n)).all()


def test_sequential_resumes_mid_epoch_and_defaults():
    tokens = np.arange(1000)
    a = make_batches(tokens, "sequential", 4, 10, seed=0)
    assert isinstance(a, SequentialBatches) and iter(a) is a and a.offset == 0
    assert (a.starts == np.arange(4) * a.stream_len).all()
    for _ in range(a.batches_per_epoch + 3):  # into epoch 1, which is shifted
        next(a)
    state = a.state_dict()
    assert state == {"epoch": 1, "pos": 3}
    b = SequentialBatches(tokens, 4, 10)  # seed 0, rank 0 of 1 by default
    b.load_state_dict(state)
    assert b.offset == a.offset and b.offset > 0
    for _ in range(a.batches_per_epoch):
        assert (next(b).x == next(a).x).all()


def test_epoch_offsets_are_a_function_of_seed_and_epoch():
    def offsets(seed: int) -> list[int]:
        stream = SequentialBatches(np.arange(1000), 4, 10, seed=seed)
        out = []
        for epoch in range(1, 6):
            stream._start_epoch(epoch)
            out.append(stream.offset)
        return out

    assert offsets(3) == offsets(3)
    assert offsets(3) != offsets(4)
    assert len(set(offsets(3))) > 1


def test_random_batches_resume_and_defaults():
    tokens = np.arange(500)
    a = make_batches(tokens, "random", 8, 12, seed=3)
    assert isinstance(a, RandomBatches) and iter(a) is a
    assert (next(a).x == next(RandomBatches(tokens, 8, 12, seed=3, rank=0)).x).all()
    state = a.state_dict()
    want = next(a)
    other = RandomBatches(tokens, 8, 12, seed=99)
    other.load_state_dict(state)
    assert (next(other).x == want.x).all()
    assert not (next(RandomBatches(tokens, 8, 12, seed=3, rank=1)).x == next(RandomBatches(tokens, 8, 12, 3)).x).all()


def test_random_windows_may_use_the_whole_text():
    b = next(RandomBatches(np.arange(11), 2, 10, seed=0))  # exactly one window fits
    assert (b.x[:, 0] == 0).all() and (b.y[:, -1] == 10).all()
    with pytest.raises(CharRNNError, match="shorter than seq_len"):
        RandomBatches(np.arange(10), 2, 10, seed=0)


def test_make_batches_passes_every_setting_on():
    tokens = np.arange(2000)
    seq = make_batches(tokens, "sequential", 3, 7, seed=1, rank=1, world_size=2)
    want = SequentialBatches(tokens, 3, 7, seed=1, rank=1, world_size=2)
    assert (seq.starts == want.starts).all() and seq.seq_len == 7 and seq.seed == 1 and seq.tokens is tokens
    rnd = make_batches(tokens, "random", 3, 7, seed=1, rank=1, world_size=2)
    assert (next(rnd).x == next(RandomBatches(tokens, 3, 7, seed=1, rank=1)).x).all()
    assert next(rnd).x.shape == (3, 7)


def test_streams_continue_from_a_step_on_another_number_of_workers():
    """A run resumed on another number of workers: each worker's stream goes on from about where the step puts it,
    not from the start (sequential), and draws windows no fresh stream draws (random)."""
    tokens = np.arange(1000)
    fresh, later = SequentialBatches(tokens, 4, 10), SequentialBatches(tokens, 4, 10)
    for _ in range(7):
        next(fresh)
    later.continue_from(7)  # within the first epoch: exactly where the steps took it
    assert later.state_dict() == fresh.state_dict() == {"epoch": 0, "pos": 7}
    later.continue_from(10 * later.batches_per_epoch + 3)
    assert later.state_dict()["epoch"] >= 9 and 0 <= later.state_dict()["pos"] < later.batches_per_epoch
    first, resumed = RandomBatches(tokens, 4, 10, seed=0, rank=1), RandomBatches(tokens, 4, 10, seed=0, rank=1)
    resumed.continue_from(37)
    drawn = {tuple(next(first).x[:, 0].tolist()) for _ in range(200)}
    assert tuple(next(resumed).x[:, 0].tolist()) not in drawn
    again = RandomBatches(tokens, 4, 10, seed=0, rank=1)
    again.continue_from(37)
    resumed = RandomBatches(tokens, 4, 10, seed=0, rank=1)
    resumed.continue_from(37)
    assert (next(again).x == next(resumed).x).all()  # the same step, the same windows: a resume is reproducible
