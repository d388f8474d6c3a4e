"""Never lose a run: exact resume in a new process, signals, SIGKILL at any moment, warm starts."""

from __future__ import annotations

import contextlib
import errno
import importlib
import inspect
import json
import os
import pty
import resource
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import charrnn as charrnn_api
from charrnn import checkpoint, config, run
from charrnn.errors import CharRNNError
from charrnn.train import Event, Trainer
from tests.helpers import CPU, RUN_FLAGS, TINY_FLAGS, TINY_SHAPE, charrnn, env, train, wide_text

slow = pytest.mark.slow  # runs the command line in a subprocess

def losses(run_dir: Path) -> list[tuple]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(m["split"], m["step"], m["loss"], m["lr"], m["grad_norm"]) for m in lines]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint.list_checkpoints(run_dir)[-1] / "model.safetensors")


@slow
@pytest.mark.parametrize(
    ("steps", "stop_at", "extra"),
    [(40, 20, []), (200, 100, ["--dropout", "0.1"]), (60, 30, ["--batching", "random", "--dropout", "0.2"])],
    ids=["sequential", "across-epoch-boundary", "random-batches"],
)
def test_resume_is_bit_identical(corpus: Path, tmp_path: Path, steps: int, stop_at: int, extra: list[str]):
    """The first half runs in a process of its own (nothing but the checkpoint carries over) for one case."""
    args = ["train", corpus, "--steps", steps, "--eval-every", 15, "--log-every", 4, *TINY_SHAPE, *extra, *CPU]
    charrnn(*args, "--out", "whole", cwd=tmp_path)
    stopped = charrnn(*args, "--out", "halves", cwd=tmp_path, stop_at=stop_at, separate=not extra)
    assert stopped.returncode == 130, stopped.stderr
    assert "Resume with: charrnn train --resume halves" in stopped.stderr
    assert checkpoint.latest_of(tmp_path / "halves").step == stop_at
    charrnn("train", "--resume", "halves", cwd=tmp_path)
    assert losses(tmp_path / "whole") == losses(tmp_path / "halves")
    a, b = final_weights(tmp_path / "whole"), final_weights(tmp_path / "halves")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_changed_settings_and_finished_runs(corpus: Path, tmp_path: Path):
    charrnn("train", corpus, "--steps", 10, *TINY_FLAGS, "--out", "r", cwd=tmp_path)
    changed = charrnn("train", "--resume", "r", "--hidden-size", 32, cwd=tmp_path, check=False)
    assert changed.returncode == 2
    assert "Error: hidden_size is 32 but the run was trained with 24" in changed.stderr
    done = charrnn("train", "--resume", "r", cwd=tmp_path, check=False)
    assert done.returncode == 2 and "already finished" in done.stderr
    more = charrnn("train", "--resume", "r", "--steps", 20, cwd=tmp_path)
    assert "resuming r at step 10" in more.stderr
    (tmp_path / "r" / "notes.txt").write_text("x")
    as_file = charrnn("train", "--resume", "r/notes.txt", cwd=tmp_path, check=False)
    assert as_file.returncode == 2 and "is a file: --resume takes a run directory" in as_file.stderr
    corpus.write_text(corpus.read_text(encoding="utf-8") + "more", encoding="utf-8")
    edited = charrnn("train", "--resume", "r", "--steps", 30, cwd=tmp_path, check=False)
    assert edited.returncode == 2 and f"the corpus {corpus} has changed since this run started" in edited.stderr
    none = charrnn("train", "--resume", "nothing-here", cwd=tmp_path, check=False)
    assert none.returncode == 2 and "Error: there is no run nothing-here to resume" in none.stderr


def _wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not checkpoint.list_checkpoints(run_dir):
        assert proc.poll() is None and time.monotonic() < deadline, "training never saved a checkpoint"
        time.sleep(0.05)


@slow
def test_sigterm_from_outside_saves_and_tells_how_to_resume(corpus: Path, tmp_path: Path):
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "train", str(corpus), "--steps", "100000",
                             *TINY_FLAGS, "--out", "r"], cwd=tmp_path, env=env(), stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(tmp_path / "r", proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    _assert_stopped_and_resumable(tmp_path, stderr, signal.SIGTERM)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_ctrl_c_and_a_closed_terminal_save_and_tell_how_to_resume(corpus: Path, tmp_path: Path, monkeypatch,
                                                                   sig: int, code: int):
    """The real signal, raised in this process at step 12 (the CLI's handlers are installed by then)."""
    step = Trainer.train_step

    def train_step(self: Trainer, batch: object) -> object:
        out = step(self, batch)
        if self.step == 12:
            os.kill(os.getpid(), sig)
        return out

    def not_handled(signum: int, frame: object) -> None:
        raise AssertionError(f"charrnn did not handle {signal.Signals(signum).name}")

    monkeypatch.setattr(Trainer, "train_step", train_step)
    previous = signal.signal(sig, not_handled)  # what runs if charrnn installs no handler of its own
    try:
        result = charrnn("train", corpus, "--steps", 100, *TINY_FLAGS, "--out", "r", cwd=tmp_path, check=False)
    finally:
        signal.signal(sig, previous)
    assert result.returncode == code, result.stderr
    _assert_stopped_and_resumable(tmp_path, result.stderr, sig)


@slow
def test_closing_the_terminal_itself_saves_and_tells_how_it_ended(corpus: Path, tmp_path: Path):
    """The window is closed: the kernel hangs the terminal up (writing to it fails from then on) and sends SIGHUP.
    The run still finishes its step, scores and saves it, and records how it ended."""
    pid, terminal = pty.fork()  # the child leads a session whose controlling terminal is this pseudo-terminal
    if pid == 0:
        os.chdir(tmp_path)
        os.execve(sys.executable, [sys.executable, "-m", "charrnn", "train", str(corpus), "--steps", "100000",
                                   *TINY_FLAGS, "--out", "r"], env())
    try:
        deadline, shown = time.monotonic() + 60, b""
        while not checkpoint.list_checkpoints(tmp_path / "r") or b"step" not in shown:  # training, and drawn
            assert os.waitpid(pid, os.WNOHANG) == (0, 0) and time.monotonic() < deadline, shown
            if select.select([terminal], [], [], 0.05)[0]:
                shown += os.read(terminal, 65536)
        os.close(terminal)  # the hang-up
        while (done := os.waitpid(pid, os.WNOHANG)) == (0, 0):
            assert time.monotonic() < deadline + 60, "training did not stop after the hang-up"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # whatever failed, no training is left behind
    assert os.waitstatus_to_exitcode(done[1]) == 128 + signal.SIGHUP
    end, last = run.read_end(tmp_path / "r"), checkpoint.latest_of(tmp_path / "r")
    assert (end.how, end.signal, end.step) == ("signal", "SIGHUP", last.step) and last.val_loss is not None
    assert charrnn("train", "--resume", "r", "--steps", last.step + 3, cwd=tmp_path).returncode == 0


def test_a_stop_signal_speaks_from_the_training_loop_not_from_its_handler(corpus: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    """A handler that printed through the live display could wait forever: the code it interrupted may hold the
    console's lock while the display's thread, holding its own, waits for it (seen once: a hang on a closed
    terminal). What a signal has to say is said by the training loop."""
    cli_train, step = importlib.import_module("charrnn.cli.train"), Trainer.train_step
    said = []

    def train_step(self: Trainer, batch: object) -> object:
        out = step(self, batch)
        if self.step == 12:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    def say(line: str) -> None:
        said.append((line, any(f.function == "handler" and f.filename == run.__file__ for f in inspect.stack())))

    monkeypatch.setattr(Trainer, "train_step", train_step)
    monkeypatch.setattr(cli_train, "say", say)
    result = charrnn("train", corpus, "--steps", 100, *TINY_FLAGS, "--out", "r", cwd=tmp_path, check=False)
    assert result.returncode == 130, result.stderr
    assert [in_handler for line, in_handler in said if "finishing this step" in line] == [False]


def _assert_stopped_and_resumable(tmp_path: Path, stderr: str, sig: int) -> None:
    assert "Resume with: charrnn train --resume r" in stderr and "Traceback" not in stderr
    last = checkpoint.latest_of(tmp_path / "r")
    assert f"stopped by {signal.Signals(sig).name} at step {last.step}; checkpoint saved" in stderr
    assert last.val_loss is not None  # the stop checkpoint is scored
    assert charrnn("train", "--resume", "r", "--steps", last.step + 3, cwd=tmp_path).returncode == 0


def _saving(run_dir: Path) -> bool:
    """Whether a checkpoint is being written at this instant (its temporary directory exists)."""
    try:
        return any(p.name.startswith(".tmp-") for p in os.scandir(run_dir / "checkpoints"))
    except FileNotFoundError:
        return False


@slow
def test_sigkill_during_saves_never_leaves_an_unloadable_run(corpus: Path, tmp_path: Path):
    """Kill while a checkpoint is being written (watched for, not guessed by a sleep), then resume; repeat."""
    run_dir, during_save = tmp_path / "r", 0
    train = [sys.executable, "-m", "charrnn", "train", str(corpus), "--steps", "100000", *TINY_SHAPE,
             "--eval-every", "1", "--log-every", "1", *CPU, "--out", "r"]
    for kill in range(4):
        args = train if kill == 0 else [sys.executable, "-m", "charrnn", "train", "--resume", "r"]
        before = checkpoint.latest_of(run_dir).step if kill else -1
        proc = subprocess.Popen(args, cwd=tmp_path, env=env(), stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not (checkpoint.list_checkpoints(run_dir) and checkpoint.latest_of(run_dir).step > before):
            assert proc.poll() is None and time.monotonic() < deadline, "training never saved again"
            time.sleep(0.05)
        while not _saving(run_dir):  # then the next save: kill while it is being written
            assert proc.poll() is None and time.monotonic() < deadline, "training never saved again"
        proc.kill()
        during_save += _saving(run_dir)
        proc.wait()
        ckpt = checkpoint.latest_of(run_dir)
        ckpt.load_model()
        ckpt.resume_state()
    assert during_save >= 2, "the kills did not land during saves"
    assert charrnn("generate", "--checkpoint", "r", "--length", "5", cwd=tmp_path).returncode == 0
    assert charrnn("eval", "--checkpoint", "r", cwd=tmp_path).returncode == 0
    resumed = charrnn("train", "--resume", "r", "--steps", checkpoint.latest_of(run_dir).step + 2, cwd=tmp_path)
    assert resumed.returncode == 0
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]  # stale ones removed


def test_resume_restores_every_field(corpus: Path, tmp_path: Path):
    """best_loss, best_step, elapsed, the log window, the hidden state: all back as they were saved."""
    flags = {"hidden_size": 24, "embedding_size": 8, "batch_size": 4, "seq_len": 16, "eval_every": 5,
             "log_every": 2, "warmup_steps": 5, "device": "cpu", "steps": 20, "max_time": 1000.0}
    setup = run.prepare(corpus, flags=flags, out=tmp_path / "r")
    trainer = run.build_trainer(setup)
    trainer.callback = lambda event: setattr(trainer, "received_signal", signal.SIGINT) if event.step == 6 else None
    assert run.fit(trainer, setup).stopped_by == "signal"
    saved = checkpoint.latest_of(tmp_path / "r").resume_state()
    assert saved.trainer.step == 7 and saved.trainer.best_step == 5 and saved.trainer.window["chars"] > 0
    resumed = run.prepare(tmp_path / "r", resume=True, flags={"max_time": 2000.0})
    trainer = run.build_trainer(resumed)
    assert (trainer.step, trainer.best_loss, trainer.best_step) == (7, saved.trainer.best_loss,
                                                                      saved.trainer.best_step)
    assert trainer.elapsed == saved.trainer.elapsed > 0 and trainer.cfg.max_time == 2000.0
    assert trainer.progress() == pytest.approx(max(7 / 20, saved.trainer.elapsed / 2000.0))
    assert float(trainer.window.loss) == saved.trainer.window["loss"] > 0 and trainer.window.chars > 0
    assert torch.equal(trainer.hidden[0], saved.workers[0].hidden[0])


def test_a_third_signal_stops_at_once(corpus: Path, tmp_path: Path):
    setup = run.prepare(corpus, flags={"hidden_size": 8, "embedding_size": 4, "batch_size": 2, "seq_len": 8,
                                       "device": "cpu"}, out=tmp_path / "r")
    trainer = run.build_trainer(setup)
    heard = []
    with run._stop_on_signals(trainer, heard.append):
        os.kill(os.getpid(), signal.SIGTERM)
        assert trainer.received_signal == signal.SIGTERM and heard == [signal.SIGTERM]
        os.kill(os.getpid(), signal.SIGTERM)  # the second: save without scoring first
        assert trainer.skip_eval
        with pytest.raises(run.Interrupted) as info:  # the third: now
            os.kill(os.getpid(), signal.SIGTERM)
    assert info.value.signum == signal.SIGTERM  # the command line exits 128 + 15 = 143


@slow
def test_a_tampered_resume_state_is_an_error_not_a_crash(corpus: Path, tmp_path: Path):
    charrnn("train", corpus, "--steps", 10, *TINY_FLAGS, "--out", "r", cwd=tmp_path)
    ckpt = checkpoint.latest_of(tmp_path / "r")
    path = ckpt.path / "trainer.pt"
    state = torch.load(path, weights_only=True)
    state["trainer"]["optimizer"]["state"][0]["exp_avg"] = torch.zeros(1)  # shape (1,), not the weight's
    torch.save(state, path)
    meta = json.loads((ckpt.path / "meta.json").read_text())
    meta["files"]["trainer.pt"] = {"size": path.stat().st_size, "sha256": checkpoint._sha256(path)}  # consistent
    (ckpt.path / "meta.json").write_text(json.dumps(meta))
    # in a process of its own: a regression would be a segfault
    result = charrnn("train", "--resume", "r", "--steps", 20, cwd=tmp_path, check=False, separate=True)
    assert result.returncode == 2, result.stderr  # was: 139, a segfault in fused AdamW
    assert "Error: the newest checkpoint of r has a damaged training state (the optimizer's exp_avg for a " \
           "weight of shape" in result.stderr and "Traceback" not in result.stderr


@slow
def test_runs_started_together_get_their_own_directories(corpus: Path, tmp_path: Path):
    """As `for lr in 1e-3 3e-3; do charrnn train c.txt --lr $lr & done` does, in the same second."""
    args = ["train", str(corpus), "--steps", "10", *TINY_FLAGS]
    same_second = "import sys, time; from charrnn import run, cli; run.time.strftime = lambda f: '20261127-120000'; " \
                  "sys.argv = ['charrnn', *sys.argv[1:]]; cli.main()"  # both processes pick the same default name
    procs = [subprocess.Popen([sys.executable, "-c", same_second, *args, "--lr", lr], cwd=tmp_path, env=env(),
                              stderr=subprocess.PIPE, text=True) for lr in ("1e-3", "3e-3")]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    dirs = sorted((tmp_path / "runs").iterdir())
    assert [d.name for d in dirs] == ["corpus-20261127-120000", "corpus-20261127-120000-2"], errs
    for lr in ("1e-3", "3e-3"):
        charrnn(*args, "--lr", lr, "--out", f"alone-{lr}", cwd=tmp_path)
    alone = {losses(tmp_path / f"alone-{lr}")[-1][2] for lr in ("1e-3", "3e-3")}
    together = {losses(d)[-1][2] for d in dirs}
    assert together == alone and len(alone) == 2
    for d in dirs:
        checkpoint.latest_of(d).load_model()


def test_a_run_that_fails_early_takes_away_only_what_it_added(corpus: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    """`--out .` beside the corpus, or any folder of the user's: a run that fails before it has written anything of
    value (here its first step) removes what it added to the folder, and nothing else; a folder it made, whole."""
    def fails(self: Trainer, batch: object) -> None:
        raise CharRNNError("the first step failed")

    monkeypatch.setattr(Trainer, "train_step", fails)
    (tmp_path / "notes").mkdir()
    for out in (tmp_path, tmp_path / "new" / "run"):
        setup = run.prepare(corpus, flags=RUN_FLAGS, out=out)
        trainer = run.build_trainer(setup)
        assert (setup.run_dir / ".lock").exists()
        with pytest.raises(CharRNNError, match="the first step failed"):
            run.fit(trainer, setup)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "new", "notes"]
    assert not (tmp_path / "new" / "run").exists()


def test_a_run_that_trained_in_the_directory_meanwhile_is_never_joined(corpus: Path, tmp_path: Path):
    """Two runs started into one --out (or resumed): the first ends before the second, still reading its text, takes
    the directory. The second stops at an error and leaves the first's run as it was."""
    train(tmp_path, "first", steps=10)
    late = run.prepare(corpus, flags=RUN_FLAGS, out=tmp_path / "shared")
    train(tmp_path, "shared", steps=10)  # the first run, done meanwhile
    before = sorted(p.name for p in (tmp_path / "shared").rglob("*"))
    with pytest.raises(CharRNNError, match="already holds a run"):
        run.build_trainer(late)
    stale = run.prepare(tmp_path / "first", resume=True, flags={"steps": 30})
    resume_flags = run.prepare(tmp_path / "first", resume=True, flags={"steps": 20})
    run.fit(run.build_trainer(resume_flags), resume_flags)  # another resume, done meanwhile
    with pytest.raises(CharRNNError, match="another charrnn process trained in .* while this one was starting"):
        run.build_trainer(stale)
    assert sorted(p.name for p in (tmp_path / "shared").rglob("*")) == before
    assert late.lock is None and stale.lock is None
    assert checkpoint.latest_of(tmp_path / "first").step == 20


def test_a_full_disk_when_resuming_is_an_error_and_keeps_how_the_run_ended(corpus: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch):
    train(tmp_path, "r", stop_at=10)
    ended = (tmp_path / "r" / run.ENDED).read_text()

    def full(path: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run, "write_atomic", full)
    setup = run.prepare(tmp_path / "r", resume=True)
    with pytest.raises(CharRNNError, match="cannot write the run directory .*No space left on device; free some disk"):
        run.build_trainer(setup)
    assert (tmp_path / "r" / run.ENDED).read_text() == ended  # `charrnn runs` still says it stopped, resumable


def test_warm_start_and_vocabulary_growth(corpus: Path, tmp_path: Path):
    charrnn("train", corpus, "--steps", 10, *TINY_FLAGS, "--out", "base", cwd=tmp_path)
    new = tmp_path / "new.txt"
    new.write_text(corpus.read_text(encoding="utf-8") + " Zürich!", encoding="utf-8")
    refused = charrnn("train", new, "--init-from", "base", *TINY_FLAGS, cwd=tmp_path, check=False)
    assert refused.returncode == 2
    assert "has 3 character(s) that base has never seen: '!' (U+0021), 'Z' (U+005A), 'ü' (U+00FC)" in refused.stderr
    shape = charrnn("train", new, "--init-from", "base", "--hidden-size", 32, cwd=tmp_path, check=False)
    assert "Error: hidden_size is 32 but --init-from base has 24" in shape.stderr
    grown = charrnn("train", new, "--init-from", "base", "--grow-vocab", "--steps", 5, *TINY_SHAPE,
                    "--out", "tuned", cwd=tmp_path)
    assert "added 3 new character(s)" in grown.stderr
    old, tuned = checkpoint.latest_of(tmp_path / "base"), checkpoint.latest_of(tmp_path / "tuned")
    assert tuned.vocab.chars[: len(old.vocab)] == old.vocab.chars and tuned.step == 5
    assert tuned.model_config.hidden_size == 24
    out = charrnn("generate", "--checkpoint", "tuned", "--prefix", "Zürich", "--length", "5", cwd=tmp_path)
    assert out.stdout.startswith("Zürich")


@slow
def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(corpus: Path, tmp_path: Path):
    """A file size limit (`ulimit -f`) stands in for a full disk: the weights fit, the optimizer state does not."""
    charrnn("train", corpus, "--steps", 10, *TINY_FLAGS, "--out", "r", cwd=tmp_path)
    limit = (tmp_path / "r" / "checkpoints" / "step-00000010" / "model.safetensors").stat().st_size + 4096
    full = subprocess.run([sys.executable, "-m", "charrnn", "train", "--resume", "r", "--steps", "20"], cwd=tmp_path,
                          env=env(), capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert full.returncode == 1, full.stderr
    (line,) = [line for line in full.stderr.splitlines() if line.startswith("Error: ")]
    assert "cannot write a checkpoint in r/checkpoints" in line and "the previous checkpoint is kept" in line
    assert "Traceback" not in full.stderr
    assert [p.name for p in (tmp_path / "r" / "checkpoints").iterdir()] == ["step-00000010"]
    assert charrnn("train", "--resume", "r", "--steps", 20, cwd=tmp_path).returncode == 0


def test_a_large_vocabulary_trains_resumes_and_samples_with_the_exact_adaptive_head(tmp_path: Path):
    """Over ADAPTIVE_VOCAB distinct characters `auto` picks the adaptive head: the run resumes bit for bit, and
    the model samples and scores exactly (its probabilities sum to one)."""
    corpus = tmp_path / "poems.txt"
    corpus.write_text(wide_text(distinct=2500), encoding="utf-8")
    flags = {"hidden_size": 32, "embedding_size": 8, "batch_size": 4, "seq_len": 16, "eval_every": 4,
             "log_every": 2, "warmup_steps": 2, "device": "cpu", "steps": 8, "eval_chars": 2000}
    whole = run.prepare(corpus, flags=flags, out=tmp_path / "whole")
    assert whole.model.config.cutoffs and len(whole.corpus.vocab) > config.ADAPTIVE_VOCAB
    run.fit(run.build_trainer(whole), whole)
    halves = run.prepare(corpus, flags=flags, out=tmp_path / "halves")
    trainer = run.build_trainer(halves)
    log = trainer.callback  # writes metrics.jsonl

    def stop_at_4(event: Event) -> None:
        log(event)
        if event.step == 4:
            trainer.received_signal = signal.SIGINT

    trainer.callback = stop_at_4
    run.fit(trainer, halves)
    resumed = run.prepare(tmp_path / "halves", resume=True)
    run.fit(run.build_trainer(resumed), resumed)
    assert losses(tmp_path / "whole") == losses(tmp_path / "halves")
    a, b = final_weights(tmp_path / "whole"), final_weights(tmp_path / "halves")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) and "head.rank" in a
    model = charrnn_api.load(tmp_path / "whole", device="cpu")
    text = model.generate(corpus.read_text(encoding="utf-8")[:5], length=20, seed=1, top_p=0.9)
    assert len(text) == 25 and model.score(text).chars == 24
    ckpt = checkpoint.latest_of(tmp_path / "whole")
    weights = load_file(ckpt.path / "model.safetensors")
    weights["head.rank"][:2] = 0  # no longer a permutation: indexing with it could read out of bounds
    save_file(weights, ckpt.path / "model.safetensors")
    with pytest.raises(CharRNNError, match="head.rank is not an ordering of the vocabulary"):
        checkpoint.read_weights(ckpt.path, ckpt.model_config)
