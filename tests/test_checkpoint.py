import dataclasses
import json
import os
import stat
import time
from pathlib import Path

import pytest
import torch

import charrnn
from charrnn import checkpoint
from charrnn.config import ModelConfig, TrainConfig
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.schema import CheckpointMeta, CorpusInfo, Scores


def make(tmp_path: Path, step: int, val_loss: float | None, seed: int = 0,
         resume: bool = False) -> tuple[CharRNN, Path]:
    torch.manual_seed(seed)
    model = CharRNN(ModelConfig(vocab_size=4, hidden_size=8, embedding_size=3))
    meta = CheckpointMeta(step=step, vocab=list("abcé"), model=model.config, config=TrainConfig(),
                          corpus=CorpusInfo("c.txt", "0" * 64, 100), metrics=Scores(val_loss=val_loss), elapsed=1.0)
    return model, checkpoint.save(tmp_path, model, meta, schema_resume_state() if resume else None)


def test_save_then_load_gives_identical_logits(tmp_path: Path):
    model, path = make(tmp_path, 10, 1.0)
    ckpt = checkpoint.verify(path)
    loaded = ckpt.load_model()
    idx = torch.randint(4, (2, 5))
    torch.testing.assert_close(loaded(idx)[0], model(idx)[0], rtol=0, atol=0)
    assert ckpt.vocab.chars == list("abcé") and ckpt.step == 10
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_corruption_is_detected_and_skipped(tmp_path: Path):
    make(tmp_path, 10, 2.0)
    _, newer = make(tmp_path, 20, 1.0)
    weights = newer / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CharRNNError, match="corrupt or incomplete"):
        checkpoint.verify(newer)
    found = checkpoint.find(tmp_path, tmp_path / "runs")
    assert found.step == 10 and len(found.skipped) == 1 and "does not match its manifest" in found.skipped[0]


def test_foreign_and_future_checkpoints(tmp_path: Path):
    _, path = make(tmp_path, 1, 1.0)
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(CharRNNError, match="upgrade charrnn"):
        checkpoint.verify(path)
    (path / "meta.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CharRNNError, match="not a charrnn checkpoint"):
        checkpoint.verify(path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CharRNNError, match="neither a charrnn run"):
        checkpoint.find(tmp_path / "empty", tmp_path)


def test_best_latest_and_prune(tmp_path: Path):
    for step, loss in [(10, 3.0), (20, 1.0), (30, 2.0), (40, 2.5)]:
        make(tmp_path, step, loss)
    assert checkpoint.best_of(tmp_path).step == 20
    assert checkpoint.latest_of(tmp_path).step == 40
    checkpoint.prune(tmp_path, keep=1)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-00000020", "step-00000040"]


def test_find_accepts_run_checkpoint_and_file(tmp_path: Path):
    _, path = make(tmp_path, 5, 1.0)
    for p in (tmp_path, tmp_path / "checkpoints", path, path / "model.safetensors"):
        assert checkpoint.find(p, tmp_path).path == path
    with pytest.raises(CharRNNError, match="no trained model found"):
        checkpoint.find(None, tmp_path / "runs")


def test_resume_state_refuses_code(tmp_path: Path):
    _, path = make(tmp_path, 5, 1.0)

    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    torch.save({"x": Evil()}, path / "trainer.pt")
    with pytest.raises(CharRNNError, match="refusing to load"):
        checkpoint.verify(path).resume_state()
    assert not (tmp_path / "pwned").exists()


def test_a_failed_write_leaves_nothing_and_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch):
    make(tmp_path, 10, 1.0)

    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    model = CharRNN(ModelConfig(vocab_size=4, hidden_size=8, embedding_size=3))
    meta = checkpoint.latest_of(tmp_path).meta
    with pytest.raises(CharRNNError, match=r"cannot write a checkpoint in .*checkpoints \(\[enforce fail") as info:
        checkpoint.save(tmp_path, model, dataclasses.replace(meta, step=20), schema_resume_state())
    assert info.value.exit_code == 1 and "previous checkpoint is kept" in str(info.value)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000010"]  # no temp dir left
    assert checkpoint.latest_of(tmp_path).step == 10


def test_temp_dirs_of_a_killed_save_are_removed_by_the_next_save(tmp_path: Path):
    make(tmp_path, 10, 1.0)
    (tmp_path / "checkpoints" / ".tmp-step-00000020-999999").mkdir()
    (tmp_path / "checkpoints" / ".old-step-00000010-999999").mkdir()
    make(tmp_path, 30, 1.0)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000010", "step-00000030"]


def test_the_latest_run_is_the_one_saved_last(tmp_path: Path):
    runs = tmp_path / "runs"
    make(runs / "b", 10, 1.0)
    make(runs / "a", 10, 1.0)
    assert checkpoint.find(None, runs).path.parent.parent.name == "a"
    os.utime(runs / "b" / "checkpoints", ns=(time.time_ns() + 10**9,) * 2)  # b saves again, later
    assert checkpoint.find(None, runs).path.parent.parent.name == "b"
    assert checkpoint.latest_run(runs) == runs / "b"


def schema_resume_state():
    from charrnn.schema import ResumeState, TrainerState, WorkerState

    return ResumeState(TrainerState(1, 1.0, 1.0, 1, 0, {"steps": 0.0, "loss": 0.0, "chars": 0}, {}, {}),
                       [WorkerState({}, [], torch.get_rng_state(), [])])
def usable(run_dir: Path, which: str) -> tuple[int, list[str]]:
    """The step of the checkpoint ``latest`` / ``best`` picks, and the warnings about skipped ones (the one
    place these tests call the pickers, so a change of their signature is one edit)."""
    picked = {"latest": checkpoint.latest_of, "best": checkpoint.best_of}[which](run_dir)
    return picked.step, list(picked.skipped)


def flip_byte(path: Path, where: float = 0.5) -> None:
    """Corrupt a file without changing its size: one byte inverted, ``where`` of the way in."""
    data = bytearray(path.read_bytes())
    i = int(len(data) * where)
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["model.safetensors", "trainer.pt"])
@pytest.mark.parametrize("where", [0.0, 0.5, 0.999])
def test_same_size_corruption_is_detected_and_skipped(tmp_path: Path, name: str, where: float):
    for step, loss in [(10, 2.0), (20, 1.0)]:
        make(tmp_path, step, loss, seed=step, resume=True)
    newer = tmp_path / "checkpoints" / "step-00000020"
    size = (newer / name).stat().st_size
    flip_byte(newer / name, where)
    assert (newer / name).stat().st_size == size
    with pytest.raises(CharRNNError, match=f"corrupt or incomplete: {name} does not match"):
        checkpoint.verify(newer)
    for which in ("latest", "best"):  # the corrupt one was both the newest and the best
        step, warn = usable(tmp_path, which)
        assert step == 10 and len(warn) == 1 and "step-00000020" in warn[0]


def test_every_unusable_checkpoint_is_refused_with_its_reason(tmp_path: Path):
    _, path = make(tmp_path, 3, 1.0)
    meta = json.loads((path / "meta.json").read_text())
    cases = [
        ({**meta, "version": "1"}, "upgrade charrnn"),
        ({**meta, "files": {k: v for k, v in meta["files"].items() if k != "model.safetensors"}},
         "incomplete: no model.safetensors"),
        ({k: v for k, v in meta.items() if k != "files"}, "'files' should be dict, not None"),
        ({**meta, "files": {**meta["files"], "trainer.pt": {"size": 1, "sha256": "0" * 64}}},
         "trainer.pt does not match"),
        ([meta], "not a charrnn checkpoint \\(unknown format\\)"),
        # settings torch would fail on with a traceback, or take as they come
        ({**meta, "model": {**meta["model"], "cell": "LSTM"}}, "cell must be one of"),
        ({**meta, "model": {**meta["model"], "dropout": 1.5}}, "dropout must be in \\[0, 1\\), not 1.5"),
        ({**meta, "model": {**meta["model"], "hidden_size": 0}}, "hidden_size must be from 1 to 65,536, not 0"),
        ({**meta, "model": {**meta["model"], "num_layers": 10**9}}, "num_layers must be from 1 to 64"),
    ]
    for bad, message in cases:
        (path / "meta.json").write_text(json.dumps(bad))
        with pytest.raises(CharRNNError, match=message):
            checkpoint.verify(path)
    (path / "meta.json").write_text(json.dumps({**meta, "version": checkpoint.META_VERSION}))
    assert checkpoint.verify(path).step == 3
    (path / "meta.json").write_text("{not json")
    with pytest.raises(CharRNNError, match="corrupt meta.json"):
        checkpoint.verify(path)
    (path / "meta.json").unlink()
    with pytest.raises(CharRNNError, match="no meta.json"):
        checkpoint.verify(path)


def test_a_checkpoint_removed_while_it_is_read_is_an_error_not_a_crash(tmp_path: Path, monkeypatch):
    """`charrnn generate` beside a training that prunes the checkpoint it is reading."""
    _, path = make(tmp_path, 3, 1.0)

    def removed(file: Path) -> str:
        raise FileNotFoundError(2, "No such file or directory", str(file))

    monkeypatch.setattr(checkpoint, "_sha256", removed)
    with pytest.raises(CharRNNError, match="is corrupt or incomplete"):
        checkpoint.verify(path)


def test_metadata_and_resume_state_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=3, cell="gru", hidden_size=5, embedding_size=2, num_layers=1))
    meta = CheckpointMeta(step=7, vocab=list("xyz"), model=model.config, config=TrainConfig(cell="gru"),
                          corpus=CorpusInfo("c.txt", "1" * 64, 50, "latin-1", "replace"), metrics=Scores(),
                          elapsed=2.5)
    state = schema_resume_state()
    path = checkpoint.save(tmp_path, model, meta, state)
    ckpt = checkpoint.verify(path)
    assert ckpt.model_config == model.config and ckpt.vocab.chars == list("xyz") and ckpt.val_loss is None
    assert ckpt.meta.corpus == meta.corpus and ckpt.meta.elapsed == 2.5 and ckpt.meta.config.cell == "gru"
    assert json.loads((path / "meta.json").read_text())["format"] == checkpoint.FORMAT
    got = ckpt.resume_state()
    assert got.trainer == state.trainer and torch.equal(got.workers[0].rng_cpu, state.workers[0].rng_cpu)
    _, plain = make(tmp_path, 8, None)
    with pytest.raises(CharRNNError, match="holds no training state"):
        checkpoint.verify(plain).resume_state()


def test_a_resave_cut_short_between_its_renames_keeps_the_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Re-saving a step swaps the old copy out, then the new one in: a failure, a third Ctrl-C or a SIGKILL in
    between must not leave the step without either."""
    model, path = make(tmp_path, 10, 1.0)
    meta = checkpoint.verify(path).meta
    rename = Path.rename

    def interrupted(self: Path, target: Path) -> Path:
        if self.name.startswith(".tmp-"):
            raise KeyboardInterrupt
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, model, meta)
    monkeypatch.setattr(Path, "rename", rename)
    assert checkpoint.verify(path).step == 10 and len(list((tmp_path / "checkpoints").iterdir())) == 1
    path.rename(path.with_name(".old-step-00000010-4242"))  # killed between the renames
    make(tmp_path, 20, 1.0)  # the next save puts it back
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-00000010", "step-00000020"]
    assert checkpoint.verify(path).step == 10


def test_unreadable_weights_are_an_error_not_a_crash(tmp_path: Path):
    _, path = make(tmp_path, 1, 1.0)
    ckpt = checkpoint.verify(path)
    (path / "model.safetensors").write_bytes(b"\0" * 100)
    with pytest.raises(CharRNNError, match="unreadable weights"):
        ckpt.load_model()


def test_resaving_a_step_replaces_it(tmp_path: Path):
    stale = tmp_path / "checkpoints" / f".tmp-step-00000010-{os.getpid()}"  # left by a crashed save
    stale.mkdir(parents=True)
    (stale / "junk").write_text("")
    make(tmp_path, 10, 1.0, seed=0)
    assert not stale.exists()
    model, path = make(tmp_path, 10, 0.5, seed=1)
    loaded = checkpoint.verify(path).load_model()
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(),
                                                 strict=True))
    assert checkpoint.verify(path).val_loss == 0.5
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000010"]


def test_pickers_on_ties_unscored_and_leftovers(tmp_path: Path):
    for step, loss in [(10, 1.0), (20, 1.0), (30, 2.0)]:
        make(tmp_path, step, loss)
    assert checkpoint.best_of(tmp_path).step == 20  # a tie goes to the newer
    (tmp_path / "checkpoints" / ".tmp-step-00000040-1").mkdir()  # an interrupted save
    (tmp_path / "checkpoints" / "step-notes.txt").write_text("")
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [f"step-000000{s}" for s in (10, 20, 30)]
    assert checkpoint.list_checkpoints(tmp_path / "nothing") == []
    other = tmp_path / "unscored"
    for step in (5, 6, 7):
        make(other, step, None)
    assert checkpoint.best_of(other).step == 7
    with pytest.raises(CharRNNError, match="no usable checkpoint"):
        checkpoint.latest_of(tmp_path / "nothing")
    with pytest.raises(CharRNNError, match="no usable checkpoint"):
        checkpoint.best_of(tmp_path / "nothing")


def test_prune_keeps_the_newest_and_the_best(tmp_path: Path):
    for step, loss in [(10, 3.0), (20, 1.0), (30, 2.0), (40, 2.5), (50, 2.6)]:
        make(tmp_path, step, loss)
    checkpoint.prune(tmp_path, keep=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-00000020", "step-00000040",
                                                                          "step-00000050"]
    checkpoint.prune(tmp_path / "new-run", keep=2)  # nothing saved yet: nothing to do
    long = tmp_path / "long"  # step 10**8 is named with nine digits: it is still the newest
    for step, loss in [(99_999_998, 1.0), (99_999_999, 2.0), (100_000_000, 3.0)]:
        make(long, step, loss)
    checkpoint.prune(long, keep=1)
    assert [p.name for p in checkpoint.list_checkpoints(long)] == ["step-99999998", "step-100000000"]
    assert checkpoint.latest_of(long).step == 100_000_000


def test_latest_run_and_resolve_latest(tmp_path: Path):
    runs = tmp_path / "runs"
    for name, step in [("a", 1), ("b", 2)]:
        make(runs / name, step, 1.0)
    (runs / "empty").mkdir()
    os.utime(runs / "b" / "checkpoints", ns=(10**18, 10**18))  # b was last written to in 2001
    assert checkpoint.latest_run(runs) == runs / "a"
    assert checkpoint.find(None, runs).step == 1
    make(runs / "a", 3, 5.0)
    assert checkpoint.find(runs / "a", runs).step == 1  # the best by default
    assert checkpoint.latest_of(runs / "a").step == 3
    with pytest.raises(CharRNNError, match="does not exist"):
        checkpoint.find(runs / "missing", runs)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoint_files_follow_the_umask(tmp_path: Path, umask: int, mode: int):
    # safetensors writes its file 0600: a checkpoint shared with others must be readable like its other files
    old = os.umask(umask)
    try:
        _, path = make(tmp_path, 10, 1.0)
    finally:
        os.umask(old)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()} == {
        name: mode for name in ("model.safetensors", "meta.json")}


def rewrite_weights(path: Path, data: bytes) -> None:
    """Replace a checkpoint's weights file and keep its manifest consistent (as a careful tamperer would)."""
    (path / "model.safetensors").write_bytes(data)
    meta = json.loads((path / "meta.json").read_text())
    meta["files"]["model.safetensors"] = {"size": len(data), "sha256": checkpoint._sha256(path / "model.safetensors")}
    (path / "meta.json").write_text(json.dumps(meta))


def safetensors_bytes(header: object, body: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + body


@pytest.mark.parametrize(("how", "message"), [
    ("short", "unreadable weights \\(the safetensors header is cut short\\)"),
    ("long-header", "unreadable weights \\(the safetensors header is cut short\\)"),
    ("not-object", "unreadable weights \\(the safetensors header is not an object\\)"),
    ("nested", "unreadable weights \\(maximum recursion depth exceeded"),
    ("bad-shape", "unreadable weights \\(tensor 'embed.weight' has no valid shape\\)"),
    ("negative-shape", "unreadable weights \\(tensor 'embed.weight' has no valid shape\\)"),
    ("entry-not-object", "unreadable weights \\(tensor 'embed.weight' has no valid shape\\)"),
    ("body-cut", "unreadable weights"),
    ("extra-tensor", "weights that do not fit the model its meta.json describes"),
    ("nan", "weights that are not finite"),
    ("huge", "weights that do not fit the model its meta.json describes"),
    ("deep", "weights that do not fit the model its meta.json describes"),
    ("outside", "its manifest names files it cannot hold"),
])
def test_weights_that_do_not_fit_their_metadata_are_refused(tmp_path: Path, how: str, message: str):
    from safetensors.torch import save as to_bytes

    model, path = make(tmp_path, 1, 1.0)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    meta = json.loads((path / "meta.json").read_text())
    if how == "short":
        rewrite_weights(path, b"\x10\x00\x00")
    elif how == "long-header":
        rewrite_weights(path, (10**6).to_bytes(8, "little") + b"{}")
    elif how == "not-object":
        rewrite_weights(path, safetensors_bytes([1, 2]))
    elif how == "nested":  # JSON nested deeper than Python's parser recurses
        header = b"[" * 100_000 + b"]" * 100_000
        rewrite_weights(path, len(header).to_bytes(8, "little") + header)
    elif how in ("bad-shape", "negative-shape"):
        shape = ["4"] if how == "bad-shape" else [4, -3]
        rewrite_weights(path, safetensors_bytes({"embed.weight": {"dtype": "F32", "shape": shape,
                                                                 "data_offsets": [0, 0]}}))
    elif how == "entry-not-object":
        rewrite_weights(path, safetensors_bytes({"embed.weight": 3}))
    elif how == "body-cut":  # a header that fits the model, over data cut short
        rewrite_weights(path, to_bytes(weights)[:-16])
    elif how == "extra-tensor":
        rewrite_weights(path, to_bytes({**weights, "spare": torch.zeros(2)}))
    elif how == "nan":
        weights["head.bias"][1] = float("nan")
        rewrite_weights(path, to_bytes(weights))
    elif how in ("huge", "deep"):
        meta = json.loads((path / "meta.json").read_text())
        meta["model"].update(hidden_size=60_000) if how == "huge" else meta["model"].update(num_layers=64)
        (path / "meta.json").write_text(json.dumps(meta))
    elif how == "outside":  # a real file elsewhere, with its true size and hash
        (tmp_path / "elsewhere").write_text("x")
        meta["files"]["../../elsewhere"] = {"size": 1, "sha256": checkpoint._sha256(tmp_path / "elsewhere")}
        (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CharRNNError, match=message):
        checkpoint.verify(path)


def test_weights_with_safetensors_metadata_load(tmp_path: Path):
    from safetensors.torch import save as to_bytes

    model, path = make(tmp_path, 1, 1.0)
    rewrite_weights(path, to_bytes(model.state_dict(), metadata={"format": "pt"}))  # a __metadata__ entry
    loaded = checkpoint.verify(path).load_model()
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(),
                                                 strict=True))


def test_an_interrupted_save_leaves_nothing_and_the_version_is_recorded(tmp_path: Path, monkeypatch):
    _, path = make(tmp_path, 1, 1.0)
    assert json.loads((path / "meta.json").read_text())["charrnn_version"] == charrnn.__version__
    monkeypatch.setattr(checkpoint, "_sha256", lambda p: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path, 2, 1.0)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000001"]


def test_a_run_saved_before_a_setting_existed_resumes_as_it_ran(tmp_path: Path):
    """A checkpoint written before lr_drop existed never dropped its rate: it reads as lr_drop 1, not the default."""
    _, path = make(tmp_path, 3, 1.0)
    meta = json.loads((path / "meta.json").read_text())
    del meta["config"]["lr_drop"]
    (path / "meta.json").write_text(json.dumps(meta))
    assert checkpoint.verify(path).meta.config.lr_drop == 1.0 != TrainConfig().lr_drop
