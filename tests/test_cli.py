"""End to end through the real command line, and every user error path."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from charrnn import __version__, checkpoint, devices, run, train
from charrnn.cli import app, views
from charrnn.errors import CharRNNError
from charrnn.evaluate import Score
from tests.helpers import ROOT, TINY_FLAGS

runner = CliRunner()


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """--threads (and generate's default of one) set torch's threads for this whole process: put them back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result, code: int, message: str) -> None:
    assert result.exit_code == code, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert message in line, result.stderr
    assert "Traceback" not in result.output + result.stderr


@pytest.fixture
def trained(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    result = cli("train", corpus, "--steps", "30", *TINY_FLAGS)
    assert result.exit_code == 0, result.output
    return tmp_path / "runs"


def test_train_generate_eval_end_to_end(trained: Path):
    (run_dir,) = trained.iterdir()
    assert (run_dir / "config.toml").is_file()
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    val = [m for m in lines if m["split"] == "val"]
    assert {"step", "split", "loss", "perplexity", "bpc", "lr", "grad_norm", "chars_per_s", "elapsed"} <= set(lines[0])
    assert [m["step"] for m in val] == [10, 20, 30]

    first = cli("generate", "--prefix", "machine", "--seed", "1", "--length", "80")
    again = cli("generate", "--prefix", "machine", "--seed", "1", "--length", "80")
    assert first.exit_code == 0, first.output
    assert first.stdout == again.stdout
    assert first.stdout.startswith("machine") and len(first.stdout) == len("machine") + 80 + 1
    best = min(val, key=lambda m: m["loss"])
    used = (f"using runs/{run_dir.name}/checkpoints/step-{best['step']:08d} (step {best['step']}, "
            f"val loss {best['loss']:.4f})")
    assert first.stderr == used + "\n"  # stdout holds the text, and stderr only says which checkpoint made it
    greedy = [cli("generate", "--prefix", "café", "--greedy", "--length", "30").stdout for _ in range(2)]
    assert greedy[0] == greedy[1]
    one = cli("generate", "--prefix", "machine", "--greedy", "--length", "20").stdout
    many = cli("generate", "--prefix", "machine", "--greedy", "--length", "20", "--num-samples", "3")
    assert many.exit_code == 0 and many.stdout == "\n".join([one] * 3)  # a batch of 3 = 3 single runs
    sampled = cli("generate", "--num-samples", "3", "--length", "20", "--seed", "2")
    assert sampled.exit_code == 0 and len(sampled.stdout) >= 3 * 21

    result = cli("eval", "--json")
    assert result.exit_code == 0, result.output
    score = json.loads(result.stdout)
    best = min(m["loss"] for m in val)
    assert score["loss"] == pytest.approx(best, rel=1e-6)  # eval reproduces what training reported
    assert score["perplexity"] == pytest.approx(math.exp(score["loss"]))
    assert score["bpc"] == pytest.approx(score["loss"] / math.log(2))
    assert score["chars"] > 0
    plain = cli("eval")
    assert "perplexity" in plain.stdout and "bits/char" in plain.stdout and plain.stderr == used + "\n"


def test_after_a_stop_signal_generate_can_use_the_stop_checkpoint(corpus: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    step = train.Trainer.train_step

    def train_step(self, batch):  # a Ctrl-C during step 15, between the validations at steps 10 and 20
        out = step(self, batch)
        self.received_signal = signal.SIGINT if self.step == 15 else self.received_signal
        return out

    monkeypatch.setattr(train.Trainer, "train_step", train_step)
    result = cli("train", corpus, "--steps", "30", *TINY_FLAGS, "--out", "r")
    assert result.exit_code == 130, result.output
    stop = checkpoint.latest_of(Path("r"))
    assert stop.step == 15 and stop.val_loss is not None  # scored, so it competes with step 10 for best
    assert f"stopped by SIGINT at step 15; checkpoint saved (val loss {stop.val_loss:.4f})" in result.stderr
    best = checkpoint.best_of(Path("r"))
    generated = cli("generate", "--checkpoint", "r", "--length", "5")
    assert generated.stderr == f"using {best.path} (step {best.step}, val loss {best.val_loss:.4f})\n"


def test_eval_on_a_file_and_unknown_characters(trained: Path, tmp_path: Path):
    text = tmp_path / "other.txt"
    text.write_text("machine river bread light " * 20)
    assert cli("eval", text, "--json").exit_code == 0
    text.write_text("machine ✓ river ✓ Ω")
    assert_user_error(cli("eval", text), 2, f"{text} has 2 character(s) the model has never seen (3 times in all): '✓'")


def test_generate_errors(trained: Path):
    assert_user_error(cli("generate", "--prefix", "日本"), 2, "the prefix has 2 character(s) the model has never seen")
    assert_user_error(cli("generate", "--temperature", "0"), 2, "temperature must be > 0")
    assert_user_error(cli("generate", "--top-k", "0"), 2, "top_k must be at least 1")
    assert_user_error(cli("generate", "--top-p", "1.5"), 2, "top_p must be in (0, 1]")
    assert_user_error(cli("generate", "--length", "-1"), 2, "--length must be >= 0")
    assert_user_error(cli("generate", "--checkpoint", "nowhere"), 2, "checkpoint nowhere does not exist")


def test_no_run_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert_user_error(cli("generate"), 2, "no trained model found under runs/")
    assert_user_error(cli("eval"), 2, "no trained model found under runs/")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hidden-size", "0"], "hidden_size must be at least 1"),
        (["--dropout", "1"], "dropout must be in [0, 1)"),
        (["--lr", "-1"], "lr must be a positive number"),
        (["--cell", "lstn"], "cell must be one of rnn, gru, lstm"),
        (["--batch-size", "500"], "the training split (5400 characters) is too short for 500 streams"),
        (["--errors", "maybe"], "--errors must be strict, replace or ignore"),
        (["--eval-chars", "-1"], "eval_chars must be >= 0 (0 scores the whole split), not -1"),
        (["--threads", "0"], "--threads must be at least 1, not 0"),
    ],
)
def test_bad_training_settings(corpus: Path, tmp_path: Path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    assert_user_error(cli("train", corpus, "--steps", "5", *args), 2, message)
    assert not (tmp_path / "runs").exists()  # nothing half-written


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_accelerator(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert_user_error(cli("train", corpus, "--device", "cuda"), 2, "no CUDA GPU is available")


def test_bad_corpora(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good text\xc3\x28 more")
    assert_user_error(cli("train", bad), 2, f"{bad} is not valid utf-8: bad byte 0xc3 at byte offset 9")
    assert_user_error(cli("train", tmp_path / "missing.txt"), 2, "does not exist")
    assert_user_error(cli("train", tmp_path), 2, f"{tmp_path} holds no text files (skipped 1 entry that is not "
                      "utf-8 text): give a folder with utf-8 text files in it")  # a folder is a corpus (sources.py)
    short = tmp_path / "short.txt"
    short.write_text("ab")
    assert_user_error(cli("train", short), 2, "too short to split")
    assert not (tmp_path / "runs").exists()


def test_bad_config_file(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text("hidden_sise = 3\n")
    assert_user_error(cli("train", corpus, "--config", cfg), 2, "unknown setting 'hidden_sise'")


def test_out_dir_already_used(trained: Path, corpus: Path):
    (run_dir,) = trained.iterdir()
    assert_user_error(cli("train", corpus, "--out", run_dir), 2, f"{run_dir} already holds a run")


def test_version_and_help():
    assert cli("--version").stdout.strip() == f"charrnn {__version__}"
    for command in ("train", "generate", "eval"):
        result = cli(command, "--help")
        assert result.exit_code == 0 and "Usage" in result.stdout


def test_python_dash_m(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    out = subprocess.run([sys.executable, "-m", "charrnn", "--version"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, check=True)
    assert out.stdout.strip() == f"charrnn {__version__}"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty or only whitespace: give a file with text to learn from"),
        (b"   \n\n\t ", "is empty or only whitespace"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00", "looks like a binary file (it contains NUL bytes)"),
        (b"caf\xe9 au lait", "is not valid utf-8: bad byte 0xe9 at byte offset 3"),
    ],
    ids=["empty", "whitespace", "binary", "latin-1"],
)
def test_corpus_errors_through_the_cli(tmp_path: Path, monkeypatch, content: bytes, message: str):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.txt"
    path.write_bytes(content)
    assert_user_error(cli("train", path), 2, message)
    assert not (tmp_path / "runs").exists()


def test_unreadable_corpus(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    real_open = Path.open

    def denied(self, *args, **kwargs):
        if self == corpus:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)
    assert_user_error(cli("train", corpus, "--steps", "1", *TINY_FLAGS), 2, f"cannot read {corpus}: Permission denied")


def test_encoding_option_reads_other_encodings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "latin.txt"
    path.write_bytes(("café au lait et crème brûlée " * 200).encode("latin-1"))
    result = cli("train", path, "--encoding", "latin-1", "--steps", "2", *TINY_FLAGS)
    assert result.exit_code == 0, result.output
    assert_user_error(cli("train", path, "--encoding", "klingon"), 2, "unknown encoding 'klingon'")


def test_huge_vocabulary_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "wide.txt"
    path.write_text("".join(chr(0x4E00 + i) for i in range(10_050)) * 2, encoding="utf-8")
    result = cli("train", path, "--steps", "1", *TINY_FLAGS)
    assert result.exit_code == 0, result.output
    assert "Warning: " in result.stderr and "10,050 distinct characters" in result.stderr


def test_out_of_memory_is_one_line(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)

    def oom(self):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr("charrnn.train.Trainer.fit", oom)
    assert_user_error(cli("train", corpus, *TINY_FLAGS), 3, "out of memory: the model or batch does not fit")


def test_num_samples_must_be_positive(trained: Path):
    assert_user_error(cli("generate", "--num-samples", "0"), 2, "--num-samples must be at least 1")


def test_corrupt_checkpoints_fall_back_then_fail(trained: Path):
    (run_dir,) = trained.iterdir()
    ckpts = sorted((run_dir / "checkpoints").iterdir())
    (ckpts[-1] / "model.safetensors").write_bytes(b"garbage")
    result = cli("generate", "--length", "3", "--seed", "0")
    assert result.exit_code == 0
    assert "Warning: " in result.stderr and "does not match its manifest; using an older checkpoint" in result.stderr
    for ckpt in ckpts:
        (ckpt / "meta.json").write_text("{not json")
    assert_user_error(cli("generate"), 2, "no usable checkpoint in runs/")


def test_resume_without_any_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert_user_error(cli("train", "--resume"), 2, "no trained model found under runs/")
    assert_user_error(cli("train"), 2, "give the corpus to train on")


def test_eval_needs_the_unchanged_corpus(trained: Path, corpus: Path):
    corpus.write_text(corpus.read_text(encoding="utf-8") + "machine", encoding="utf-8")
    assert_user_error(cli("eval"), 2, f"the run's corpus {corpus} has changed since training")
    corpus.unlink()
    assert_user_error(cli("eval"), 2, f"the run's corpus {corpus} is gone: it is needed to resume or to score")


def test_an_unreadable_corpus_says_so_not_that_it_changed(trained: Path, corpus: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    def unreadable(path: Path, *args: object, **kwargs: object) -> None:
        raise CharRNNError(f"cannot read {path}: Permission denied")  # as root, chmod 000 would not stop a read

    monkeypatch.setattr(run, "load_corpus", unreadable)
    assert_user_error(cli("eval"), 2, f"cannot read {corpus}: Permission denied")


def test_mistyped_flag_values_are_usage_errors(corpus: Path):
    result = cli("train", corpus, "--steps", "many")
    assert result.exit_code == 2
    assert "Error: Invalid value for '--steps'" in result.stderr and "Traceback" not in result.stderr
    assert cli("train", corpus, "--hidden-sise", "3").exit_code == 2


def test_device_names_are_checked_everywhere(trained: Path):
    for command in ("generate", "eval"):
        for name in ("foo", "meta", "cuda:0"):
            assert_user_error(cli(command, "--device", name), 2, f"--device must be one of auto, cpu, cuda, mps, "
                              f"not {name!r}")


def test_out_never_overwrites_a_users_config(corpus: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp").mkdir()
    mine = tmp_path / "exp" / "config.toml"
    mine.write_text("hidden_size = 24\n")
    assert_user_error(cli("train", corpus, "--config", mine, "--out", "exp", *TINY_FLAGS), 2,
                      "exp already has a config.toml that a run would overwrite: choose another --out")
    assert mine.read_text() == "hidden_size = 24\n"


def test_a_very_long_corpus_name_trains(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    long = tmp_path / ("n" * 240 + ".txt")
    long.write_text("machine river bread light " * 200)
    result = cli("train", long, "--steps", "2", *TINY_FLAGS)
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert len(run_dir.name) < 100


def damage(meta: dict, how: str) -> dict:
    if how == "nested":
        meta["step"] = {"step": 3}
    elif how == "wrong-type":
        meta["model"]["hidden_size"] = "24"
    elif how == "unknown-key":
        meta["config"]["learning_rate_2"] = 1.0
    elif how == "vocab":
        meta["vocab"] = meta["vocab"][:-1]
    elif how == "huge":
        meta["model"]["hidden_size"] = 100_000
    elif how == "deep":
        meta["model"]["num_layers"] = 100_000
    return meta


@pytest.mark.parametrize("how", ["nested", "wrong-type", "unknown-key", "vocab", "huge", "deep", "outside", "nan"])
def test_damaged_checkpoints_are_reported_and_skipped(trained: Path, how: str):
    (run_dir,) = trained.iterdir()
    newest = sorted((run_dir / "checkpoints").iterdir())[-1]
    if how == "nan":
        from safetensors.torch import load_file, save_file

        weights = load_file(newest / "model.safetensors")
        weights["head.bias"][0] = float("nan")
        save_file(weights, newest / "model.safetensors")
        meta = json.loads((newest / "meta.json").read_text())
        meta["files"]["model.safetensors"] = {"size": (newest / "model.safetensors").stat().st_size,
                                              "sha256": checkpoint._sha256(newest / "model.safetensors")}
    elif how == "outside":  # a manifest naming a real file elsewhere, with its true size and hash
        meta = json.loads((newest / "meta.json").read_text())
        corpus = trained.parent / "corpus.txt"
        meta["files"]["../../../../corpus.txt"] = {"size": corpus.stat().st_size, "sha256": checkpoint._sha256(corpus)}
    else:
        meta = damage(json.loads((newest / "meta.json").read_text()), how)
    (newest / "meta.json").write_text(json.dumps(meta))
    for command in (["generate", "--length", "3", "--seed", "0", "--checkpoint", run_dir], ["eval", "--json"]):
        result = cli(*command)
        assert result.exit_code == 0, result.output
        (warning,) = [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]
        assert f"checkpoints/{newest.name} " in warning and warning.endswith("using an older checkpoint")
        assert "Traceback" not in result.output
    assert_user_error(cli("generate", "--checkpoint", newest), 2, f"checkpoint {newest}")


@pytest.mark.slow
@pytest.mark.parametrize(("shell", "code", "message"), [
    ("charrnn generate --length 50 > /dev/full", 1, "Error: cannot write the output: No space left on device"),
    ("charrnn eval --json > /dev/full", 1, "Error: cannot write the output: No space left on device"),
    ("charrnn eval >&-", 2, "Error: the standard output is closed"),
    ("PYTHONIOENCODING=ascii charrnn generate --prefix café --length 3", 1,
     "Error: the output's encoding (ascii) cannot show '\\xe9'"),
    ("charrnn generate --length 100000 --seed 1 | head -c 1", 0, ""),
], ids=["generate-full-disk", "eval-full-disk", "closed-stdout", "ascii-stdout", "reader-leaves"])
def test_output_problems_are_one_line(trained: Path, shell: str, code: int, message: str):
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(["bash", "-o", "pipefail", "-c", shell], cwd=trained.parent, env=env,
                            capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    said = [line for line in result.stderr.splitlines() if not line.startswith("using ")]  # which checkpoint
    if message:
        assert result.returncode == code and said[0].startswith(message) and len(said) == 1, result.stderr
    else:
        assert result.returncode == 141 and said == []  # `head` left: quiet, like other tools


def test_prefix_from_a_file_or_standard_input(trained: Path, tmp_path: Path):
    path = tmp_path / "prefix.txt"
    path.write_text("\ufeffmachine river", encoding="utf-8")
    given = cli("generate", "--prefix", "machine river", "--greedy", "--length", "20").stdout
    assert cli("generate", "--prefix-file", path, "--greedy", "--length", "20").stdout == given
    piped = runner.invoke(app, ["generate", "--prefix-file", "-", "--greedy", "--length", "20"],
                          input=b"machine river")
    assert piped.exit_code == 0 and piped.stdout == given
    assert_user_error(cli("generate", "--prefix", "a", "--prefix-file", path), 2, "not both")
    assert_user_error(cli("generate", "--prefix-file", tmp_path / "nope.txt"), 2, "cannot read the prefix from")
    path.write_bytes(b"caf\xe9")
    assert_user_error(cli("generate", "--prefix-file", path), 2, "is not valid UTF-8 (bad byte at offset 3)")


@pytest.mark.parametrize("seed", ["-1", str(2**63)])
def test_generate_seed_must_fit(trained: Path, seed: str):
    assert_user_error(cli("generate", "--seed", seed), 2, f"--seed must be a whole number from 0 to 2**63 - 1, "
                      f"not {seed}")


def test_length_zero_with_several_samples(trained: Path):
    result = cli("generate", "--prefix", "ab", "--length", "0", "--num-samples", "2")
    assert result.exit_code == 0 and result.stdout == "ab\n\nab\n"


def test_a_file_name_that_is_not_utf8(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = os.fsdecode(b"caf\xe9.txt")  # how Python holds a non-UTF-8 file name: a lone surrogate
    (tmp_path / name).write_text("machine river bread light " * 200, encoding="utf-8")
    result = cli("train", name, "--steps", "2", "--eval-every", "2", *TINY_FLAGS)
    assert result.exit_code == 0, result.output
    score = cli("eval", "--json")
    assert score.exit_code == 0, score.output
    assert json.loads(score.stdout)["text"].startswith(str(tmp_path / name).encode("utf-8", "surrogateescape")
                                                       .decode("utf-8", "replace")[:5])
    assert cli("eval").exit_code == 0


WATCH_TORCH_IMPORT = """
import importlib.abc, os, runpy, sys
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            print("torch loads with OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY"), flush=True)
            sys.meta_path.remove(self)
sys.meta_path.insert(0, Watch())
sys.argv = ["charrnn", *COMMAND]
if ENTRY == "script":
    from charrnn.cli import main
    main()
else:
    runpy.run_module("charrnn", run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.parametrize(("entry", "command", "given", "seen"), [
    ("script", "generate", None, "PASSIVE"), ("python -m", "generate", None, "PASSIVE"),
    ("python -m", "generate", "ACTIVE", "ACTIVE"), ("script", "train", None, None), ("python -m", "eval", None, None)])
def test_generate_waits_passively_unless_told_otherwise(entry: str, command: str, given: str | None, seen: str):
    # libgomp reads OMP_WAIT_POLICY once, as torch loads: the command line must set it before anything imports torch
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update({"PYTHONPATH": str(Path(__file__).parent.parent)}, **({"OMP_WAIT_POLICY": given} if given else {}))
    script = f"ENTRY = {entry!r}\nCOMMAND = [{command!r}, '--help']\n" + WATCH_TORCH_IMPORT
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.splitlines()[0] == f"torch loads with OMP_WAIT_POLICY {seen}"


def test_threads_option(trained: Path):
    assert cli("generate", "--length", "5", "--threads", "2").exit_code == 0 and torch.get_num_threads() == 2
    assert cli("generate", "--length", "5").exit_code == 0 and torch.get_num_threads() == 1  # one stream: one thread
    assert cli("eval", "--threads", "1").exit_code == 0 and torch.get_num_threads() == 1
    for command in ("generate", "eval"):
        assert_user_error(cli(command, "--threads", "0"), 2, "--threads must be at least 1, not 0")


def test_training_warns_once_when_another_process_slows_it(corpus: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    slowed = devices.Contention.slowed
    # every window after the first runs at a tenth of the speed, as with a busy neighbour
    monkeypatch.setattr(devices.Contention, "slowed",
                        lambda watch, speed: slowed(watch, speed / (10 if watch.best else 1)))
    result = cli("train", corpus, "--steps", "30", "--threads", "1", *TINY_FLAGS)
    assert result.exit_code == 0, result.output
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]
    assert "another process may be competing for the CPU; give each fewer threads with --threads" in warning
    assert "(this one uses 1)" in warning


def test_progress_bar_says_where_the_run_is_and_what_it_does():
    def fields(view: views.ProgressView) -> tuple[str, str]:
        task = view.progress.tasks[0]
        return task.fields["where"], task.fields["state"]

    view = views.ProgressView(3000)
    assert fields(view) == ("step 0/3000", "starting: the first steps")
    view.on_event(train.Event("train", 250, 2.5, 1e-3, 1.0, 12_345.0, 30.0, 250 / 3000))
    assert fields(view) == ("step 250/3000", "loss 2.5000  val -  12.3k chars/s")
    view.on_evaluate(50_000, 250_000)
    assert fields(view)[1] == "evaluating 20% of 250,000 chars  val -"
    view.on_event(train.Event("val", 250, 2.0, 1e-3, None, None, 31.0, 250 / 3000))
    assert fields(view)[1] == "loss 2.5000  val 2.0000 ppl 7.39 bpc 2.885  12.3k chars/s"
    timed = views.ProgressView(3000, max_time=120)
    timed.on_event(train.Event("train", 40, 2.5, 1e-3, 1.0, 1000.0, 12.4, 0.1))
    assert fields(timed)[0] == "step 40, 12s/120s"


def test_the_user_hears_where_validation_rose_and_what_it_changed(corpus: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch):
    """Each drop of the learning rate, and the rise that ends the run, is told at its step, and the evaluation's line
    of metrics.jsonl keeps the same words; evaluations that change nothing say nothing more."""
    losses = iter([2.0, 2.5, *[2.6] * 10])
    monkeypatch.setattr(train.Trainer, "evaluate", lambda self: Score(next(losses), 100))
    out = tmp_path / "run"
    result = cli("train", corpus, "--steps", "60", "--lr-drop", "0.1", "--min-lr-ratio", "0.1", "--out", out,
                 *TINY_FLAGS)
    assert result.exit_code == 0, result.output
    told = [line for line in result.stderr.splitlines() if "above its best" in line]
    assert len(told) == 2, result.stderr
    assert told[0].startswith("step 20: validation 25.0 % above its best (2.0000 at step 10): the learning rate "
                              "drops to ")
    assert told[1] == ("step 30: validation 30.0 % above its best (2.0000 at step 10): the learning rate is at its "
                       "floor, so training stops")
    assert "validation rose again with the learning rate at its floor" in result.stderr
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(m["step"], m["note"]) for m in lines if "note" in m] == [(20, told[0][len("step 20: "):]),
                                                                      (30, told[1][len("step 30: "):])]


def test_eval_shows_progress_on_large_texts(trained: Path, monkeypatch: pytest.MonkeyPatch):
    heard = []
    scoring_view = views.scoring_view

    def every_text_is_large() -> views.BarView:
        view = scoring_view()
        view.show_from, update = 0, view.update
        view.update = lambda done, total: (heard.append(done), update(done, total))
        return view

    monkeypatch.setattr("charrnn.cli.evaluate.scoring_view", every_text_is_large)
    result = cli("eval", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["chars"] == heard[-1] and heard[0] == 0
