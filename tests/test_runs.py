"""charrnn runs: every state a run can be in (finished, stopped, crashed, resumed, running), damaged logs and
directories that are not runs, and the command's table and JSON lines."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charrnn import run, runs
from charrnn.cli import app
from charrnn.errors import CharRNNError
from tests.helpers import RUN_FLAGS, fake_clock, resume, train

runner = CliRunner()


class Crash(Exception):
    """Stands for a SIGKILL: the process ends where it is, writing nothing more."""


def crash_at(root: Path, name: str, step: int, resuming: bool = False) -> None:
    """Train (or resume) root/name until ``step``, then die there without any clean-up a signal would do."""
    if resuming:
        setup = run.prepare(root / name, resume=True)
    else:
        setup = run.prepare(root / "corpus.txt", flags=RUN_FLAGS, out=root / name)
    trainer = run.build_trainer(setup)
    logged = trainer.callback

    def callback(event):  # type: ignore[no-untyped-def]
        logged(event)
        if event.step >= step:
            raise Crash

    trainer.callback = callback
    with pytest.raises(Crash):
        run.fit(trainer, setup)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs of every kind, trained once for the module: FLAGS train 20 steps, evaluating every 10."""
    path = tmp_path_factory.mktemp("runs")
    (path / "corpus.txt").write_text("the quiet river carries the old stone.\n" * 160, encoding="utf-8")
    stopped = train(path, "runs/stopped", stop_at=13)
    shutil.copytree(stopped, path / "runs/resumed")
    resume(path / "runs/resumed")
    shutil.copytree(stopped, path / "runs/resumed-crashed")
    crash_at(path, "runs/resumed-crashed", 15, resuming=True)
    crash_at(path, "runs/crashed", 15)
    crash_at(path, "runs/no-checkpoint", 5)
    return path


def info(root: Path, name: str) -> runs.RunInfo:
    return runs.read(root / "runs" / name)


@pytest.mark.parametrize(("name", "state", "resumable", "step"), [
    ("resumed", "finished", False, 20),
    ("stopped", "stopped", True, 13),
    ("crashed", "crashed", True, 10),
    ("resumed-crashed", "crashed", True, 13),
    ("no-checkpoint", "crashed", False, None),
])
def test_how_a_run_ended(root: Path, name: str, state: str, resumable: bool, step: int | None):
    r = info(root, name)
    assert (r.state, r.resumable, r.step) == (state, resumable, step), r.problems
    assert r.steps == 20 and (r.cell, r.num_layers, r.hidden_size) == ("lstm", 2, 24)


def test_a_finished_run_says_what_it_is(root: Path):
    r = info(root, "resumed")
    assert r.corpus == "corpus.txt" and r.vocab_size == 18
    assert r.parameters == sum(p.numel() for p in run.checkpoint.best_of(r.path).load_model().parameters())
    val = [m for m in runs.read_metrics(r.path)[0] if m.split == "val"]
    best = min(val, key=lambda m: m.loss)
    assert (r.best_loss, r.best_step) == (best.loss, best.step) and r.best_bpc == pytest.approx(best.loss / 0.693147,
                                                                                                 rel=1e-5)
    assert r.elapsed > 0 and r.problems == ()


def test_a_crash_says_what_was_lost(root: Path):
    assert info(root, "crashed").problems == ("logged up to step 15, saved up to step 10: a resume starts there",)
    assert "no checkpoint" in info(root, "no-checkpoint").problems[0]


def test_a_run_whose_lock_is_held_is_running(root: Path, tmp_path: Path):
    live = shutil.copytree(root / "runs" / "crashed", tmp_path / "live")
    with (live / "metrics.jsonl").open("a") as f:  # it has logged past its newest checkpoint
        f.write(json.dumps({"split": "train", "step": 17, "loss": 2.0, "elapsed": 99.0}) + "\n")
    fd = os.open(live / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what run._claim holds while training
        r = runs.read(live)
        assert (r.state, r.step, r.elapsed) == ("running", 17, 99.0)
    finally:
        os.close(fd)
    assert runs.read(live).state == "crashed"  # the lock was let go without a clean end
    assert not runs.is_running(root / "runs" / "resumed")  # and probing it left it free


def test_damaged_lines_and_checkpoints_are_skipped_and_counted(root: Path, tmp_path: Path):
    r = shutil.copytree(root / "runs" / "resumed", tmp_path / "damaged")
    good = runs.read(r)
    with (r / "metrics.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"split": "val", "step": 20, "loss": "low"}\n')  # a wrong type
        f.write("[" * 100_000 + "\n")  # too deep for the JSON parser
        f.write("x" * (runs.MAX_LINE + 5) + "\n")  # too long to hold
        f.write('{"split": "val", "step": 21, "loss": 0.1, "elap')  # cut short by a crash
    newest = run.checkpoint.list_checkpoints(r)[-1]
    (newest / "meta.json").write_text("{not json")
    damaged = runs.read(r)
    assert damaged.problems[0] == "4 damaged line(s) in metrics.jsonl skipped"
    assert damaged.problems[1].startswith(f"{newest.name} skipped: checkpoint")
    # the run now stands at its newest readable checkpoint, step 13, as a resume would
    assert (damaged.step, damaged.best_step, damaged.state) == (13, 10, "crashed") and good.step == 20


def test_directories_that_are_not_runs(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("hello")
    (tmp_path / "config-only").mkdir()
    (tmp_path / "config-only" / "config.toml").write_text("hidden_size = 'big'\n")
    (tmp_path / "stray-file.txt").write_text("not a directory")
    found = {r.name: r for r in runs.list_runs(tmp_path)}
    assert set(found) == {"empty", "foreign", "config-only"}
    assert found["foreign"].state == "empty" and "not a charrnn run" in found["foreign"].problems[0]
    assert found["config-only"].problems[0].startswith("config.toml unreadable: hidden_size in")


def test_runs_lists_newest_first_as_a_table_and_as_json_lines(root: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    for age, name in enumerate(["resumed", "stopped", "crashed"]):  # resumed the most recent
        for path in (root / "runs" / name, *(root / "runs" / name / f for f in ("metrics.jsonl", "checkpoints"))):
            os.utime(path, (1e9 - age, 1e9 - age))
    monkeypatch.chdir(root)
    table = runner.invoke(app, ["runs"])
    assert table.exit_code == 0, table.output
    rows = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    names = [name for name in rows if name in ("resumed", "stopped", "crashed")]
    assert names == ["resumed", "stopped", "crashed"]
    row = rows["stopped"]
    assert row.split()[1:5] == ["corpus.txt", "lstm", "2x24", "8,658"] and "stopped — resumable" in row
    lines = runner.invoke(app, ["runs", "--json"]).stdout.splitlines()
    objects = [json.loads(line) for line in lines]
    assert [o["name"] for o in objects if o["name"] in names] == names
    assert [o["state"] for o in objects if o["name"] in names] == ["finished", "stopped", "crashed"]
    assert all(o["best_bpc"] > 0 for o in objects if o["name"] in names)
    one = runner.invoke(app, ["runs", "runs/stopped", "--json"])
    assert [json.loads(line)["name"] for line in one.stdout.splitlines()] == ["stopped"]


def test_runs_errors_and_an_empty_directory(tmp_path: Path):
    missing = runner.invoke(app, ["runs", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and missing.stderr.startswith(f"Error: {tmp_path / 'nope'} does not exist: ")
    (tmp_path / "f").write_text("x")
    a_file = runner.invoke(app, ["runs", str(tmp_path / "f")])
    assert a_file.exit_code == 2 and "is a file: give a directory of runs" in a_file.stderr
    (tmp_path / "none").mkdir()
    empty = runner.invoke(app, ["runs", str(tmp_path / "none")])
    assert empty.exit_code == 0 and empty.stdout == "" and "no runs under" in empty.stderr


def test_a_run_that_validation_stopped_is_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Stopped early (validation rose with the rate at its floor): finished at that step, not crashed."""
    (tmp_path / "corpus.txt").write_text("the quiet river carries the old stone.\n" * 160, encoding="utf-8")
    setup = run.prepare(tmp_path / "corpus.txt", flags={**RUN_FLAGS, "steps": 60, "lr_drop": 0.01},
                        out=tmp_path / "r")
    trainer = run.build_trainer(setup)
    losses = iter([2.0, 2.1, 2.2])
    monkeypatch.setattr(trainer, "evaluate", lambda: run.Score(next(losses), 100))
    assert run.fit(trainer, setup).stopped_by == "validation"
    r = runs.read(tmp_path / "r")
    assert (r.state, r.resumable, r.step, r.steps) == ("finished", False, 30, 60), r.problems
    assert json.loads((tmp_path / "r" / run.ENDED).read_text())["how"] == "validation"
    for more in ({}, {"steps": 120}):  # not even with more steps: it would only overfit further
        with pytest.raises(CharRNNError, match="already finished: validation rose with the learning rate at its"):
            run.prepare(tmp_path / "r", flags=more, resume=True)


def test_a_run_whose_last_evaluation_signals_cut_short_is_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Two Ctrl-C during the final evaluation: every step was trained, so the run is finished (as a resume says),
    not stopped and resumable."""
    (tmp_path / "corpus.txt").write_text("the quiet river carries the old stone.\n" * 160, encoding="utf-8")
    setup = run.prepare(tmp_path / "corpus.txt", flags={**RUN_FLAGS, "steps": 20}, out=tmp_path / "r")
    trainer = run.build_trainer(setup)
    scored = trainer.evaluate

    def cut_short() -> run.Score | None:
        if trainer.step < 20:
            return scored()
        trainer.received_signal = signal.SIGINT
        return None

    monkeypatch.setattr(trainer, "evaluate", cut_short)
    assert run.fit(trainer, setup).stopped_by == "signal"
    r = runs.read(tmp_path / "r")
    assert (r.state, r.resumable, r.step) == ("finished", False, 20), r.problems
    with pytest.raises(CharRNNError, match="already finished"):
        run.prepare(tmp_path / "r", resume=True)


def test_a_run_that_ran_out_of_time_is_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A timed run stops short of --max-time by the time it keeps for its last evaluation; resuming it anyway
    would train a few more steps past its end and score again, unless given more time."""
    (tmp_path / "corpus.txt").write_text("the quiet river carries the old stone.\n" * 160, encoding="utf-8")
    flags = {**RUN_FLAGS, "steps": 10**6, "max_time": 5.0}
    setup = run.prepare(tmp_path / "corpus.txt", flags=flags, out=tmp_path / "r", auto=False)
    trainer = run.build_trainer(setup)
    fake_clock(monkeypatch, trainer, step=0.1, evaluation=1.0)
    summary = run.fit(trainer, setup)
    # evaluations at steps 10 and 20 keep the last second for the final one: training stops at 4.1 s
    assert (summary.stopped_by, summary.steps, summary.elapsed) == ("time", 21, pytest.approx(4.1))
    assert runs.read(tmp_path / "r").state == "finished"
    for more in ({}, {"steps": 10**7}):
        with pytest.raises(CharRNNError, match=r"r already finished \(step 21, 4s\): pass a larger --steps or"):
            run.prepare(tmp_path / "r", flags=more, resume=True)
    with pytest.raises(CharRNNError, match="already finished"):  # too little more: its final evaluation takes 1 s
        run.prepare(tmp_path / "r", flags={"max_time": 5.05}, resume=True)
    resumed = run.build_trainer(run.prepare(tmp_path / "r", flags={"max_time": 10.0}, resume=True))
    assert (resumed.step, resumed.eval_seconds) == (21, pytest.approx(1.0))  # keeps its room for the last one
