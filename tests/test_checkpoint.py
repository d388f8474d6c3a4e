import dataclasses
import json
import os
import time
from pathlib import Path

import pytest
import torch

from charrnn import checkpoint
from charrnn.config import ModelConfig, TrainConfig
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.schema import CheckpointMeta, CorpusInfo, Scores


def make(tmp_path: Path, step: int, val_loss: float | None, seed: int = 0) -> tuple[CharRNN, Path]:
    torch.manual_seed(seed)
    model = CharRNN(ModelConfig(vocab_size=4, hidden_size=8, embedding_size=3))
    meta = CheckpointMeta(step=step, vocab=list("abcé"), model=model.config, config=TrainConfig(),
                          corpus=CorpusInfo("c.txt", "0" * 64, 100), metrics=Scores(val_loss=val_loss), elapsed=1.0)
    return model, checkpoint.save(tmp_path, model, meta)


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
