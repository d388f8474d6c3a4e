"""Samples while training (--sample-every): what samples.jsonl holds, that sampling leaves training exactly as it
was, that a resumed run neither loses nor repeats a sample, and --tensorboard."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import charrnn
from charrnn import checkpoint, run, runs
from charrnn.cli import app
from charrnn.config import TrainConfig
from tests.helpers import RUN_FLAGS, TINY_FLAGS, resume, synthetic_text, train


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("samples")
    (path / "corpus.txt").write_text(synthetic_text(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sampled(root: Path) -> Path:
    return train(root, "sampled", sample_every=5)


def metrics(run_dir: Path) -> list[tuple]:
    """Every logged number that does not depend on the clock."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(m["split"], m["step"], m["loss"], m["lr"], m["grad_norm"]) for m in lines]


def test_samples_jsonl_has_a_sample_every_n_steps_with_the_val_loss_of_evaluation_steps(sampled: Path):
    samples, damaged = runs.read_samples(sampled)
    assert damaged == 0
    assert [s.step for s in samples] == [5, 10, 15, 20]
    val = {m.step: m.loss for m in runs.read_metrics(sampled)[0] if m.split == "val"}
    assert [s.val_loss for s in samples] == [None, val[10], None, val[20]]
    assert all(len(s.text) == 200 and s.seed == 1337 for s in samples)
    assert [s.elapsed for s in samples] == sorted(s.elapsed for s in samples)


def test_sampling_leaves_training_exactly_as_it_was(root: Path, sampled: Path):
    plain = train(root, "plain")
    assert not (plain / "samples.jsonl").exists()
    assert metrics(plain) == metrics(sampled)


def test_a_sample_is_what_generate_prints_from_that_steps_checkpoint(sampled: Path):
    samples = {s.step: s.text for s in runs.read_samples(sampled)[0]}
    for step in (10, 20):
        model = charrnn.load(sampled / "checkpoints" / f"step-{step:08d}", device="cpu")
        assert model.generate(length=200, seed=1337) == samples[step]
    assert samples[10] != samples[20]  # the model changed in between


def test_a_resumed_run_neither_loses_nor_repeats_samples(root: Path, sampled: Path):
    halves = train(root, "halves", stop_at=13, sample_every=5)
    assert checkpoint.latest_of(halves).step == 13
    with (halves / "samples.jsonl").open("a") as f:  # as if killed after logging past the checkpoint
        f.write(json.dumps({"step": 15, "elapsed": 1.0, "val_loss": None, "seed": 1337, "text": "lost"}) + "\n")
        f.write("[" * 100_000 + "\n")  # too deep for the JSON parser
        f.write('{"step": 16, "elap')
    resume(halves)
    assert (halves / "samples.jsonl").read_text() .count("\n") == 4
    assert [s.text for s in runs.read_samples(halves)[0]] == [s.text for s in runs.read_samples(sampled)[0]]
    assert metrics(halves) == metrics(sampled)


def test_a_sample_prefix_is_continued_and_checked_before_anything_is_written(root: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    with_prefix = train(root, "prefixed", sample_every=10, sample_prefix="the river", steps=10)
    (sample,) = runs.read_samples(with_prefix)[0]
    assert sample.text.startswith("the river") and len(sample.text) == len("the river") + 200
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", str(root / "corpus.txt"), *TINY_FLAGS, "--sample-every", "5",
                                      "--sample-prefix", "日本", "--out", "r"])
    assert result.exit_code == 2, result.output
    assert "Error: sample_prefix has 2 character(s) the model has never seen" in result.stderr
    assert not (tmp_path / "r").exists()
    with pytest.raises(charrnn.errors.CharRNNError, match="sample_every must be >= 0"):
        TrainConfig(sample_every=-1)


def test_train_shows_each_sample_as_it_is_written(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", str(root / "corpus.txt"), *TINY_FLAGS, "--steps", "10",
                                      "--sample-every", "10", "--out", "r"])
    assert result.exit_code == 0, result.output
    (sample,) = runs.read_samples(tmp_path / "r")[0]
    assert f"sample at step 10: {json.dumps(sample.text, ensure_ascii=False)}\n" in result.stderr  # one line
    assert sample.text not in result.stdout


def test_tensorboard_missing_is_one_error_before_anything_is_written(root: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", str(root / "corpus.txt"), *TINY_FLAGS, "--tensorboard"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: --tensorboard needs the tensorboard package, which is not installed: "
                                    "pip install 'charrnn[tensorboard]'")
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()


def test_tensorboard_gets_the_scalars_and_samples(root: Path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    setup = run.prepare(root / "corpus.txt", flags={**RUN_FLAGS, "steps": 10, "sample_every": 10}, out=root / "tb")
    run.fit(run.build_trainer(setup, tensorboard=True), setup)
    events = EventAccumulator(str(root / "tb" / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert {"loss/train", "loss/val", "bpc/train", "bpc/val", "lr", "chars_per_s"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("loss/val")] == [10]
    assert "sample/text_summary" in tags["tensors"]
