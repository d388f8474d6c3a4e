import json
import os
import stat
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
