"""Exporting a trained model to ONNX, to run without torch: onnxruntime, another language, a browser.

One graph is both the prefix pass and the one-character step (a step is a prefix of one character):

    inputs   tokens (B, T) int64, T >= 1;  h (L, B, H) float32;  c (L, B, H) float32, LSTM only
    outputs  logits (B, V) float32, the next-character logits after the last token;  h_out;  c_out (LSTM only)

Start from zero states, run the prefix, then feed each chosen character back with T = 1 and the state returned.
The vocabulary (token id = position in it) and all a program needs to use the graph are in its metadata_props
(``metadata``). lstm, gru and rnn become ONNX's own LSTM/GRU/RNN operators; mingru and minlstm are exported in
their sequential form (an ONNX Loop over the T steps; minrnn.recurrence), not the parallel scan.

The exporter is torch's TorchScript-based one (``dynamo=False``): it needs only the ``onnx`` package, and takes
under a second for a small model where the dynamo exporter takes ten and needs onnxscript as well.
This module prints nothing.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from charrnn import __version__
from charrnn.checkpoint import Checkpoint
from charrnn.errors import CharRNNError, printable
from charrnn.minrnn import recurrence
from charrnn.model import MIN_CELLS, CharRNN, num_parameters
from charrnn.vocab import Vocab

FORMATS = ("onnx",)
OPSET = 17  # LayerNormalization is opset 17; onnxruntime has run opset 17 since 1.14 (2023)
LAYOUT = "charrnn-onnx-1"  # the inputs, outputs and metadata described above; bumped if they ever change
MAX_BYTES = 2**31 - 2**24  # protobuf's 2 GiB limit on one file, less room for the graph itself


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise CharRNNError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")


class _Graph(nn.Module):
    """What is exported: CharRNN.forward in evaluation mode, with the state as separate tensors and the head
    applied to the last position only."""

    def __init__(self, model: CharRNN) -> None:
        super().__init__()
        self.model = model
        # traced as a loop over however many steps it is given, not unrolled for the example's length
        self.recur = torch.jit.script(recurrence) if model.config.cell in MIN_CELLS else None

    def forward(self, tokens: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None):
        x = self.model.embed(tokens)  # (B, T, E)
        if self.recur is not None:
            out, state = self.model.rnn(x, h, sequential=self.recur)  # (B, T, H)
        else:
            out, state = self.model.rnn(x, h if c is None else (h, c))
        logits = self.model.logits(out[:, -1])  # (B, V): log-probabilities with the adaptive head
        return (logits, *state) if c is not None else (logits, state)


def state_names(cell: str) -> list[str]:
    return ["h", "c"] if cell == "lstm" else ["h"]


def start_char(vocab: Vocab) -> str:
    """What a text starts from when there is no prefix (as in ``charrnn generate``)."""
    return "\n" if "\n" in vocab else vocab.chars[0]


def metadata(ckpt: Checkpoint) -> dict[str, str]:
    """The metadata_props of the exported model: all strings; numbers in decimal, the vocabulary as JSON."""
    cfg, scores = ckpt.model_config, ckpt.meta.metrics
    states = state_names(cfg.cell)
    return {
        "layout": LAYOUT,
        "vocab": json.dumps(ckpt.vocab.chars),  # ASCII with \\u escapes: any character survives
        "vocab_size": str(cfg.vocab_size),
        "start": json.dumps(start_char(ckpt.vocab)),
        "cell": cfg.cell,
        "num_layers": str(cfg.num_layers),
        "hidden_size": str(cfg.hidden_size),
        "embedding_size": str(cfg.embedding_size),
        "inputs": ",".join(["tokens", *states]),
        "outputs": ",".join(["logits", *(f"{s}_out" for s in states)]),
        "state_shape": "num_layers,batch,hidden_size",
        "step": str(ckpt.step),
        "val_loss": "" if scores.val_loss is None else repr(scores.val_loss),
        "corpus": printable(Path(ckpt.meta.corpus.path).name),  # protobuf strings are UTF-8
        "charrnn_version": __version__,
    }


def to_onnx(model: CharRNN, props: dict[str, str]) -> bytes:
    """The serialized ONNX model of ``model`` (moved to the CPU, in evaluation mode) with ``props`` as its
    metadata_props."""
    try:
        import onnx
    except ImportError:
        raise CharRNNError("ONNX export needs the onnx package: pip install 'charrnn[onnx]'") from None
    cfg = model.config
    if num_parameters(model) * 4 > MAX_BYTES:
        raise CharRNNError(f"the model has {num_parameters(model):,} parameters, too many for one ONNX file "
                           "(2 GiB at most)")
    model = model.to("cpu").eval()
    states = state_names(cfg.cell)
    example = (torch.zeros(2, 3, dtype=torch.int64),
               *(torch.zeros(cfg.num_layers, 2, cfg.hidden_size) for _ in states))
    outputs = ["logits", *(f"{s}_out" for s in states)]
    axes = {"tokens": {0: "batch", 1: "time"}, "logits": {0: "batch"},
            **{name: {1: "batch"} for name in [*states, *outputs[1:]]}}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on tracing and on its own deprecation
        torch.onnx.export(_Graph(model), example, buffer, dynamo=False, opset_version=OPSET,
                          input_names=["tokens", *states], output_names=outputs, dynamic_axes=axes)
    proto = onnx.load_from_string(buffer.getvalue())
    proto.doc_string = ("charrnn character model: tokens (B, T) int64 and the state in; the next-character "
                        "logits (B, V) after the last token and the new state out")
    onnx.helper.set_model_props(proto, props)
    return proto.SerializeToString()


def check_output(out: Path) -> None:
    """Refuse at once a path that cannot be written (what the file system says is found when writing)."""
    if out.is_dir():
        raise CharRNNError(f"{out} is a directory: give the name of the file to write, e.g. {out / 'model.onnx'}")
    if not out.parent.exists():
        raise CharRNNError(f"cannot write {out}: the directory {out.parent} does not exist")
    if not out.parent.is_dir():
        raise CharRNNError(f"cannot write {out}: {out.parent} is not a directory")


@dataclass(frozen=True)
class Exported:
    path: Path
    size: int  # bytes


def export(ckpt: Checkpoint, model: CharRNN, out: Path, fmt: str = "onnx") -> Exported:
    """Write ``model`` (loaded from ``ckpt``) to ``out`` in format ``fmt``, atomically: ``out`` is the new file
    or, if anything fails, what it was before (no temporary file is left)."""
    check_format(fmt)
    check_output(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:  # before the export's work, so that an unwritable place fails at once
            f.write(to_onnx(model, metadata(ckpt)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CharRNNError(f"cannot write {out}: {e.strerror or e}", exit_code=1) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Exported(out, out.stat().st_size)
