"""Training on your own text: a folder or several files (sources.py), a validation file of one's own
(--val-file), and scoring a text with characters the model has never seen (eval --skip-unknown).

One tiny run on a folder with a validation file is trained once for the whole module; the other tests read it,
resume it (each resume that must be refused stops before any training) or score with it."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from charrnn import checkpoint, dist, run
from charrnn import corpus as cp
from charrnn.corpus import files_sha256, load_corpus
from charrnn.errors import CharRNNError
from charrnn.sources import expand
from charrnn.vocab import Vocab
from tests.helpers import TINY_FLAGS, charrnn, synthetic_text

STEPS = 10


def text_of(c: cp.Corpus) -> str:
    return c.vocab.decode(np.asarray(c.tokens))


def error_line(result) -> str:
    """The one `Error:` line of a failed command, checking that it failed cleanly."""
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    return line


@pytest.fixture(autouse=True)
def no_hang():
    """A FIFO opened by mistake would block for ever: fail instead."""
    def timeout(signum, frame):
        raise TimeoutError("blocked: something opened a FIFO")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def make_folder(root: Path) -> Path:
    """poems/: two text files (one nested, one without a final newline), and things a folder walk must skip."""
    poems = root / "poems"
    (poems / "b-sub").mkdir(parents=True)
    (poems / "a.txt").write_text(synthetic_text(2000, seed=1).rstrip("\n") + "\n", encoding="utf-8")
    (poems / "b-sub" / "c.txt").write_text(synthetic_text(1500, seed=2).rstrip("\n"), encoding="utf-8")
    return poems


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run on a folder, validated on a file of its own: its directory (the folder and val.txt beside it)."""
    root = tmp_path_factory.mktemp("own-text")
    make_folder(root)
    (root / "val.txt").write_text(synthetic_text(600, seed=3), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHARRNN_CACHE_DIR", str(root / "cache"))
        result = charrnn("train", "poems", "--val-file", "val.txt", "--steps", STEPS, *TINY_FLAGS, cwd=root)
    (run_dir,) = (root / "runs").iterdir()
    assert run_dir.name.startswith("poems-"), run_dir
    assert "corpus poems (2 files): " in result.stderr and "validation file val.txt" in result.stderr
    return run_dir


# Listing a folder ------------------------------------------------------------------------------------------

def test_a_folder_is_its_text_files_in_sorted_order_and_the_rest_is_skipped_in_one_warning(tmp_path: Path):
    poems = make_folder(tmp_path)
    (poems / "b.txt").write_text("comes after b-sub/c.txt: paths sort component by component\n")
    (poems / ".hidden.txt").write_text("left out without a word\n")
    (poems / ".git").mkdir()
    (poems / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (poems / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (poems / "wide.txt").write_bytes("utf-16 text".encode("utf-16"))
    (poems / "latin.txt").write_bytes(b"caf\xe9\n")
    os.mkfifo(poems / "pipe")  # opening it would block: the walk must not
    (poems / "loop").symlink_to(poems)  # a link loop: links to folders are not followed
    (poems / "gone").symlink_to(tmp_path / "nowhere")
    (poems / "link.txt").symlink_to(poems / "a.txt")  # links to files are
    (poems / "old-run").mkdir()
    (poems / "old-run" / ".lock").touch()
    (poems / "old-run" / "config.toml").write_text("steps = 10\n")
    sources = expand(poems)
    assert sources.several and sources.given == (poems,)
    names = [str(f.relative_to(poems)) for f in sources.files]
    assert names == ["a.txt", "b-sub/c.txt", "b.txt", "link.txt"]
    assert sources.warning == (
        f"{poems}: skipped 7 of 11 entries that are not utf-8 text files: {poems}/gone (a broken link), "
        f"{poems}/image.png (binary), {poems}/latin.txt (not utf-8) and 4 more")
    assert poems / "latin.txt" in expand(poems, encoding="latin-1").files  # text in that encoding
    assert expand(poems / "a.txt").files == (poems / "a.txt",) and not expand(poems / "a.txt").several


def test_files_and_folders_given_together_keep_their_order_and_must_be_text(tmp_path: Path):
    poems = make_folder(tmp_path)
    extra = tmp_path / "extra.txt"
    extra.write_text("more\n")
    assert expand([extra, poems]).files == (extra, poems / "a.txt", poems / "b-sub" / "c.txt")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(CharRNNError, match="pipe is not a regular file .*give it alone, or save it to a file"):
        expand([extra, tmp_path / "pipe"])
    with pytest.raises(CharRNNError, match="missing.txt does not exist"):
        expand([extra, tmp_path / "missing.txt"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(CharRNNError, match=r"empty holds no text files \(skipped 1 entry that is not utf-8 text\)"):
        expand(tmp_path / "empty")


# Reading and caching several files --------------------------------------------------------------------------

def test_several_files_are_joined_by_newlines_fingerprinted_by_their_list_and_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cp, "CHUNK", 7)  # many chunks per file: the join sees the last character of each file
    a, b, c = (tmp_path / n for n in ("a.txt", "b.txt", "c.txt"))
    a.write_text("first line\n", encoding="utf-8")
    b.write_text("", encoding="utf-8")  # adds nothing, not even a newline
    c.write_bytes(b"\xef\xbb\xbfno final newline, and a BOM per file")
    joined = load_corpus([a, b, c])
    assert text_of(joined) == "first line\nno final newline, and a BOM per file\n"
    hashes = [cp.file_sha256(p) for p in (a, b, c)]
    listing = tuple(zip((a, b, c), hashes, strict=True))
    assert joined.files == listing and joined.sha256 == files_sha256(listing)
    assert text_of(load_corpus(c)) == "no final newline, and a BOM per file"  # one file alone: nothing added
    monkeypatch.setattr(cp, "_encode_to", lambda *args, **kw: pytest.fail("an unchanged corpus was encoded again"))
    assert load_corpus([a, b, c], verify=True).sha256 == joined.sha256
    monkeypatch.undo()
    b.write_text("now b has text", encoding="utf-8")
    assert text_of(load_corpus([a, b, c])) == "first line\nnow b has text\nno final newline, and a BOM per file\n"
    c.write_bytes(b"ok \xff")
    with pytest.raises(CharRNNError, match=f"{c} is not valid utf-8: bad byte 0xff at byte offset 3"):
        load_corpus([a, b, c])


# Leaving out unknown characters -----------------------------------------------------------------------------

def test_unknown_characters_are_left_out_and_counted_across_chunks_and_from_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cp, "CHUNK", 5)
    path = tmp_path / "t.txt"
    path.write_text("ab ✓ ba Ω ab ✓ αβγδεζ!", encoding="utf-8")
    vocab = Vocab(list(" ab"))
    with pytest.raises(CharRNNError, match=r"has 9 character\(s\) the model has never seen \(10 times in all\): "
                                           r"'✓' .*'Ω' .*'α' .*'β' .*'γ' \(U\+03B3\) and 4 more; remove them"):
        load_corpus(path, vocab=vocab)
    for _ in range(2):  # encoded, then from the cache
        kept = load_corpus(path, vocab=vocab, skip_unknown=True)
        assert text_of(kept) == "ab  ba  ab  "
        assert (kept.skipped.count, kept.skipped.distinct, kept.skipped.examples) == (10, 9, tuple("✓Ωαβγ"))
    path.write_text("✓✓", encoding="utf-8")
    with pytest.raises(CharRNNError, match=r"has only characters the model has never seen \(2 left out\)"):
        load_corpus(path, vocab=vocab, skip_unknown=True)


# The run on a folder with a validation file -----------------------------------------------------------------

def test_the_checkpoint_records_the_files_and_the_validation_file(trained: Path):
    root = trained.parent.parent
    ckpt = checkpoint.latest_of(trained)
    raw = json.loads((ckpt.path / "meta.json").read_text())
    assert raw["version"] == 3
    corpus, val = ckpt.meta.corpus, ckpt.meta.validation
    assert corpus.path == str(root / "poems") and corpus.inputs == (str(root / "poems"),)
    assert [f.path for f in corpus.files] == [str(root / "poems" / "a.txt"), str(root / "poems" / "b-sub" / "c.txt")]
    a, c = (Path(f.path).read_text(encoding="utf-8") for f in corpus.files)
    assert corpus.chars == len(a) + len(c) + 1 and not c.endswith("\n")  # c.txt gained a final newline
    assert (val.path, val.sha256, val.encoding, val.files) == (str(root / "val.txt"), cp.file_sha256(root / "val.txt"),
                                                               "utf-8", ())


def test_eval_scores_the_runs_validation_file(trained: Path):
    score = json.loads(charrnn("eval", "--json", "--checkpoint", trained, cwd=trained.parent).stdout)
    logged = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    (val,) = [m for m in logged if m["split"] == "val"]
    assert score["text"] == f"{trained.parent.parent / 'val.txt'} (validation file)" and score["chars"] == 599
    assert score["loss"] == pytest.approx(val["loss"], rel=1e-6) and score["skipped"] == 0


@pytest.fixture
def copy_of(trained: Path, tmp_path: Path):
    """A copy of the trained run and its texts, to change at will: (the copy of the run, the copy's root)."""
    root = tmp_path / "own-text"
    shutil.copytree(trained.parent.parent, root, ignore=shutil.ignore_patterns("cache"))
    run_dir = root / "runs" / trained.name
    for ckpt in checkpoint.list_checkpoints(run_dir):  # the copy's texts are where its checkpoints say they are
        meta = json.loads((ckpt / "meta.json").read_text().replace(str(trained.parent.parent), str(root)))
        files = meta["corpus"]["files"]
        meta["corpus"]["sha256"] = files_sha256((Path(f["path"]), f["sha256"]) for f in files)
        (ckpt / "meta.json").write_text(json.dumps(meta))
    return run_dir, root


def test_resume_refuses_a_file_added_removed_or_changed_and_a_changed_validation_file(copy_of):
    run_dir, root = copy_of
    poems = root / "poems"
    refused = "; it cannot be resumed exactly: start a new run (use --init-from to keep the weights)"
    cases = [("added", lambda: (poems / "b-sub" / "new.txt").write_text("more verse\n"),
              f"the corpus {poems} has changed since this run started ({poems}/b-sub/new.txt was added){refused}"),
             ("removed", lambda: (poems / "a.txt").unlink(),
              f"the corpus {poems} has changed since this run started ({poems}/a.txt was removed){refused}"),
             ("changed", lambda: (poems / "a.txt").write_text("machine river\n"),
              f"the corpus {poems} has changed since this run started ({poems}/a.txt changed){refused}"),
             ("validation", lambda: (root / "val.txt").write_text("bread salt\n"),
              f"the validation file {root / 'val.txt'} has changed since this run started{refused}")]
    backup = root.parent / "backup"
    shutil.copytree(root, backup)
    for _, change, message in cases:
        change()
        result = charrnn("train", "--resume", run_dir, "--steps", STEPS + 2, cwd=root, check=False)
        assert result.returncode == 2 and error_line(result) == f"Error: {message}", result.stderr
        shutil.rmtree(root)
        shutil.copytree(backup, root)
    resumed = charrnn("train", "--resume", run_dir, "--steps", STEPS + 2, cwd=root)
    assert f"resuming {run_dir} at step {STEPS}" in resumed.stderr
    assert checkpoint.latest_of(run_dir).step == STEPS + 2
    (root / "val.txt").write_text("bread salt\n")
    result = charrnn("eval", "--checkpoint", run_dir, cwd=root, check=False)
    assert error_line(result) == f"Error: the run's validation file {root / 'val.txt'} has changed since training: " \
                                 "pass the text to score"


def test_eval_can_leave_out_characters_the_model_has_never_seen(trained: Path, tmp_path: Path):
    text = tmp_path / "other.txt"
    text.write_text("machine ✓ river ✓ Ω bread salt light", encoding="utf-8")
    result = charrnn("eval", text, "--checkpoint", trained, "--skip-unknown", "--json", cwd=tmp_path)
    score = json.loads(result.stdout)
    assert score["skipped"] == 3 and score["chars"] == len("machine  river   bread salt light") - 1
    assert "left out 3 occurrence(s) of 2 character(s) the model has never seen: '✓' (U+2713), 'Ω' (U+03A9)" \
        in result.stderr
    refused = charrnn("eval", text, "--checkpoint", trained, cwd=tmp_path, check=False)  # not from the entry above
    assert refused.returncode == 2 and error_line(refused) == (
        f"Error: {text} has 2 character(s) the model has never seen (3 times in all): '✓' (U+2713), 'Ω' (U+03A9); "
        "remove them, pass --skip-unknown to score the text without them, or train on text that contains them")
    clean = tmp_path / "clean.txt"
    clean.write_text("machine  river   bread salt light", encoding="utf-8")
    same = json.loads(charrnn("eval", clean, "--checkpoint", trained, "--json", cwd=tmp_path).stdout)
    assert same["loss"] == score["loss"] and same["skipped"] == 0  # scoring without them = scoring the text left


def test_a_validation_file_must_use_the_corpus_characters_and_nothing_is_written(tmp_path: Path):
    make_folder(tmp_path)
    val = tmp_path / "val.txt"
    val.write_text("machine ✓ river", encoding="utf-8")
    result = charrnn("train", "poems", "--val-file", val, *TINY_FLAGS, cwd=tmp_path, check=False)
    assert result.returncode == 2 and error_line(result) == (
        f"Error: {val} has 1 character(s) the model has never seen: '✓' (U+2713); a validation file may only hold "
        "characters of the training corpus: remove them from it, or add text that has them to the corpus")
    val.write_text("m", encoding="utf-8")
    result = charrnn("train", "poems", "--val-file", val, *TINY_FLAGS, cwd=tmp_path, check=False)
    assert error_line(result) == f"Error: the validation file {val} needs at least two characters"
    assert not (tmp_path / "runs").exists()
    inside = tmp_path / "poems" / "a.txt"
    setup = run.prepare(tmp_path / "poems", flags={"val_file": str(inside), "device": "cpu"}, out=tmp_path / "r")
    assert setup.warnings == [f"the validation file {inside} is part of the corpus too: the model trains on it, so its "
                              "score does not measure how well the model does on text it has not seen"]


def test_an_older_checkpoint_without_the_new_fields_still_loads_and_resumes(copy_of):
    """A version 2 meta.json (no inputs, files or validation) of a run on one file reads, evaluates and resumes."""
    run_dir, root = copy_of
    single = root / "single.txt"
    single.write_text(text_of(load_corpus(sorted((root / "poems").rglob("*.txt"))))[:-1], encoding="utf-8")
    for ckpt in checkpoint.list_checkpoints(run_dir):
        meta = json.loads((ckpt / "meta.json").read_text())
        meta["version"] = 2
        del meta["validation"]
        meta["corpus"] = {"path": str(single), "sha256": cp.file_sha256(single), "chars": meta["corpus"]["chars"] - 1,
                          "encoding": "utf-8", "errors": "strict"}
        meta["config"].pop("val_file")
        (ckpt / "meta.json").write_text(json.dumps(meta))
    old = checkpoint.latest_of(run_dir)
    assert old.meta.validation is None and old.meta.corpus.files == () and old.meta.config.val_file is None
    score = json.loads(charrnn("eval", "--json", "--checkpoint", run_dir, cwd=root).stdout)
    assert score["text"] == f"{single} (validation split)"
    setup = run.prepare(run_dir, resume=True, flags={"steps": STEPS + 1})
    assert setup.corpus.sha256 == old.meta.corpus.sha256 and setup.validation is None
    meta = json.loads((old.path / "meta.json").read_text())
    meta["version"] = 3
    (old.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CharRNNError, match="'validation' is missing"):
        checkpoint.verify(old.path)


def test_a_warm_start_from_a_folder_and_the_run_name(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    poems = make_folder(tmp_path)
    (poems / "b-sub" / "z.txt").write_text("Zürich\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    setup = run.prepare([poems], init_from=trained, grow_vocab=True, flags={"steps": 2, "device": "cpu"})
    assert setup.run_dir.parent == run.RUNS_ROOT and setup.run_dir.name.startswith("poems-")
    assert [p.name for p, _ in setup.corpus.files] == ["a.txt", "c.txt", "z.txt"] and "ü" in setup.corpus.vocab
    assert any("added 2 new character(s)" in w for w in setup.warnings)


def test_workers_that_read_different_files_all_stop(trained: Path, monkeypatch: pytest.MonkeyPatch):
    """Under torchrun each worker lists and reads the folder itself: if rank 0 saw other files, every worker
    refuses (all_max), before anything is written."""
    setup = run.prepare(trained, resume=True, flags={"steps": STEPS + 1})
    world = dist.World(rank=1, world_size=2)
    monkeypatch.setattr(dist, "broadcast", lambda world, obj: ("another list", None))
    monkeypatch.setattr(dist, "all_max", lambda world, values, device: values)
    with pytest.raises(CharRNNError, match=f"the workers read different texts from {setup.corpus.path} .*run again"):
        run.build_trainer(setup, world)
