"""ONNX export: onnxruntime computes what PyTorch computes (logits and states, greedy text) for every cell; the
metadata describes the graph; the documented torch-free example runs; `charrnn export` writes atomically and
fails in one line."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import charrnn
from charrnn import export
from charrnn.cli import app
from charrnn.config import CELLS
from charrnn.errors import CharRNNError
from tests.helpers import ROOT, quick_checkpoint

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install -e '.[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")

LAYERS, HIDDEN = 2, 16  # quick_checkpoint's model
KINDS = [*CELLS, "lstm-adaptive"]  # every cell, and the adaptive output layer


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, charrnn.api.Model]]:
    """Per cell: the exported file and the same checkpoint loaded by charrnn.load."""
    root = tmp_path_factory.mktemp("export")
    out = {}
    for kind in KINDS:
        cell, adaptive = kind.removesuffix("-adaptive"), kind.endswith("-adaptive")
        path = quick_checkpoint(root, cell, cutoffs=(8, 16) if adaptive else ())
        model = charrnn.load(path, device="cpu")
        out[kind] = export.export(model.checkpoint, model.network, root / f"{kind}.onnx").path, model
    return out


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def random_state(cell: str, batch: int, generator: torch.Generator) -> list[torch.Tensor]:
    shape = (LAYERS, batch, HIDDEN)
    if cell.startswith("min"):  # the scan takes log h: min* states are positive (as the model's own are)
        return [torch.rand(shape, generator=generator) + 0.05]
    return [torch.randn(shape, generator=generator) for _ in export.state_names(cell)]


@pytest.mark.parametrize("kind", KINDS)
def test_onnxruntime_matches_pytorch_on_random_inputs_and_states(exported, kind: str):
    path, model = exported[kind]
    cell = model.network.config.cell
    sess, generator, worst = session(path), torch.Generator().manual_seed(0), 0.0
    for batch, steps in [(1, 1), (3, 1), (2, 9), (1, 64)]:
        tokens = torch.randint(len(model.vocab), (batch, steps), generator=generator)
        state = random_state(cell, batch, generator)
        names = export.state_names(cell)
        got = sess.run(None, {"tokens": tokens.numpy(), **{n: s.numpy() for n, s in zip(names, state, strict=True)}})
        with torch.no_grad():
            logits, new = model.network(tokens, tuple(state) if cell == "lstm" else state[0])
        want = [logits[:, -1], *(new if cell == "lstm" else (new,))]
        assert [g.shape for g in got] == [tuple(w.shape) for w in want]
        worst = max(worst, *(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want, strict=True)))
    print(f"\n{cell}: max |Δ| logits and states {worst:.2e}")
    assert worst < 1e-4


def ort_greedy(sess: ort.InferenceSession, prefix: str, length: int) -> str:
    """Greedy generation with onnxruntime alone, as docs/export.md does it."""
    meta = sess.get_modelmeta().custom_metadata_map
    chars = json.loads(meta["vocab"])
    shape = (int(meta["num_layers"]), 1, int(meta["hidden_size"]))
    state = {name: np.zeros(shape, np.float32) for name in meta["inputs"].split(",")[1:]}
    tokens, text = np.array([[chars.index(c) for c in prefix]], np.int64), prefix
    for _ in range(length):
        logits, *new = sess.run(None, {"tokens": tokens, **state})
        state = dict(zip(state, new, strict=True))
        token = int(logits[0].argmax())
        text += chars[token]
        tokens = np.array([[token]], np.int64)
    return text


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_text_is_identical(exported, kind: str):
    path, model = exported[kind]
    text = ort_greedy(session(path), "The machine", 500)
    assert text == model.generate("The machine", 500, greedy=True)
    assert len(set(text[-100:])) > 1  # a model stuck on one character would prove little


def test_metadata_describes_the_graph(exported):
    path, model = exported["lstm"]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["vocab"]) == model.vocab.chars and meta["vocab_size"] == str(len(model.vocab))
    assert (meta["cell"], meta["num_layers"], meta["hidden_size"], meta["embedding_size"]) == ("lstm", "2", "16", "8")
    assert (meta["inputs"], meta["outputs"]) == ("tokens,h,c", "logits,h_out,c_out")
    assert json.loads(meta["start"]) == "\n" and meta["step"] == "30"
    assert float(meta["val_loss"]) == model.checkpoint.val_loss
    assert meta["corpus"] == "corpus.txt" and meta["layout"] == export.LAYOUT  # a name, not the user's path
    assert [i.name for i in proto.graph.input] == ["tokens", "h", "c"]
    assert {p.key for p in onnx.load(str(exported["gru"][0])).metadata_props} >= {"vocab", "cell"}
    assert onnx.load(str(exported["gru"][0])).graph.input[-1].name == "h"


def test_a_corpus_named_in_bytes_that_are_not_utf8_is_exported_as_shown(exported):
    import dataclasses

    ckpt = exported["lstm"][1].checkpoint
    odd = dataclasses.replace(ckpt.meta.corpus, path=os.fsdecode(b"/data/caf\xe9.txt"))
    props = export.metadata(dataclasses.replace(ckpt, meta=dataclasses.replace(ckpt.meta, corpus=odd)))
    proto = onnx.ModelProto()
    onnx.helper.set_model_props(proto, props)
    assert onnx.load_from_string(proto.SerializeToString()).metadata_props[-2].value == "caf\ufffd.txt"


def doc_example() -> str:
    (code,) = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "export.md").read_text(encoding="utf-8"), re.S)
    return code


def run_without_torch(code: str, cwd: Path) -> str:
    """Run ``code`` in a fresh interpreter in which torch (and charrnn) cannot be imported."""
    guard = "import sys; sys.modules['torch'] = sys.modules['charrnn'] = None; exec(sys.stdin.read())"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", guard], input=code, cwd=cwd, env=env, capture_output=True,
                            text=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_documented_example_runs_without_torch(exported, tmp_path: Path):
    path, model = exported["lstm"]
    code = doc_example()
    assert len(code.strip().splitlines()) <= 20
    (tmp_path / "model.onnx").write_bytes(path.read_bytes())
    sampled = run_without_torch(code, tmp_path).removesuffix("\n")
    assert sampled.startswith("The machine") and len(sampled) == len("The machine") + 500
    assert set(sampled) <= set(model.vocab.chars)
    greedy, n = re.subn(r"^temperature, rng = [\d.]+", "temperature, rng = 0", code, flags=re.M)
    assert n == 1
    assert run_without_torch(greedy, tmp_path).removesuffix("\n") == model.generate("The machine", 500, greedy=True)


runner = CliRunner()


def test_cli_writes_the_file_and_says_so(exported, tmp_path: Path):
    path, model = exported["gru"]
    out = tmp_path / "model.onnx"
    out.write_bytes(b"old")  # replaced
    result = runner.invoke(app, ["export", "--checkpoint", str(model.checkpoint.path), "--format", "onnx", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert f"wrote {out} ({out.stat().st_size:,} bytes): gru 2x16, {len(model.vocab)} characters" in result.stderr
    assert ort_greedy(session(out), "ca", 50) == ort_greedy(session(path), "ca", 50)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def assert_user_error(args: list[str], code: int, message: str) -> None:
    result = runner.invoke(app, ["export", *args])
    assert result.exit_code == code, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert message in line, result.stderr
    assert "Traceback" not in result.output


def test_cli_errors(exported, tmp_path: Path):
    ckpt = ["--checkpoint", str(exported["rnn"][1].checkpoint.path)]
    (tmp_path / "file").write_text("x")
    assert_user_error([*ckpt, "--format", "tflite", str(tmp_path / "m")], 2,
                      "--format must be one of onnx, not 'tflite'")
    assert_user_error([*ckpt, str(tmp_path / "nope" / "m.onnx")], 2,
                      f"cannot write {tmp_path / 'nope' / 'm.onnx'}: the directory {tmp_path / 'nope'} does not exist")
    assert_user_error([*ckpt, str(tmp_path / "file" / "m.onnx")], 2, f"{tmp_path / 'file'} is not a directory")
    assert_user_error([*ckpt, str(tmp_path)], 2, f"{tmp_path} is a directory: give the name of the file to write")
    assert_user_error(["--checkpoint", str(tmp_path / "none"), str(tmp_path / "m.onnx")], 2,
                      f"checkpoint {tmp_path / 'none'} does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(exported, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    model = exported["rnn"][1]
    out = tmp_path / "model.onnx"
    out.write_bytes(b"old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(export.os, "fsync", full)
    with pytest.raises(CharRNNError, match=f"cannot write {re.escape(str(out))}: No space left on device") as e:
        export.export(model.checkpoint, model.network, out)
    assert e.value.exit_code == 1
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_without_the_onnx_package_export_says_what_to_install(exported, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(CharRNNError, match=re.escape("pip install 'charrnn[onnx]'")):
        export.to_onnx(exported["rnn"][1].network, {})
