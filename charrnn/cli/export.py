"""charrnn export: write a trained model in a format other programs run (ONNX), to a file; nothing to stdout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charrnn import export
from charrnn.cli.common import CheckpointOption, app, load, user_errors
from charrnn.cli.views import say
from charrnn.errors import printable


@app.command(name="export")
@user_errors
def export_cmd(
    out: Annotated[Path, typer.Argument(help="The file to write, e.g. model.onnx (replaced if it exists).",
                                        show_default=False)],
    fmt: Annotated[str, typer.Option("--format", help="onnx: the prefix pass and one-character step as one "
                                     "ONNX graph, the vocabulary in its metadata (docs/export.md).")] = "onnx",
    checkpoint_path: CheckpointOption = None,
) -> None:
    """Export a trained model to run without charrnn or torch (e.g. with onnxruntime)."""
    export.check_format(fmt)
    export.check_output(out)  # before the checkpoint is read
    ckpt, model, _ = load(checkpoint_path, "cpu")
    done = export.export(ckpt, model, out, fmt)
    cfg = ckpt.model_config
    say(f"wrote {printable(done.path)} ({done.size:,} bytes): {cfg.cell} {cfg.num_layers}x{cfg.hidden_size}, "
        f"{cfg.vocab_size} characters")
