"""Every save and load of model files: checkpoint layout, format version, integrity, atomic writes.

A checkpoint is a directory ``RUN/checkpoints/step-NNNNNNNN/`` holding
  model.safetensors  the weights (no pickle: safe to share and to load),
  trainer.pt         optional resume-only state (tensors and plain data, loaded with weights_only=True),
  meta.json          format version, vocabulary, model config, step, metrics, and a manifest of the other
                     files' sizes and SHA-256 hashes, written last.
It is built under a temporary name, fsynced and renamed, so it is complete or absent, never mixed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from charrnn import __version__
from charrnn.config import ModelConfig
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.vocab import Vocab

FORMAT = "charrnn-checkpoint"
VERSION = 1
WEIGHTS = "model.safetensors"
TRAINER = "trainer.pt"
META = "meta.json"
CHECKPOINTS = "checkpoints"
PREFIX = "step-"


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint on disk; weights are read only when asked for."""

    path: Path
    meta: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    @property
    def vocab(self) -> Vocab:
        return Vocab(self.meta["vocab"])

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig(**self.meta["model"])

    @property
    def val_loss(self) -> float | None:
        return self.meta.get("metrics", {}).get("val_loss")

    def load_model(self, device: torch.device | str = "cpu") -> CharRNN:
        model = CharRNN(self.model_config)
        try:
            weights = load_file(self.path / WEIGHTS, device="cpu")
            model.load_state_dict(weights)
        except (SafetensorError, RuntimeError, OSError) as e:
            raise CharRNNError(f"checkpoint {self.path} has unreadable weights ({e}): train again") from None
        return model.to(device)

    def trainer_state(self) -> dict[str, Any]:
        """The resume-only state, loaded without executing any code (weights_only=True)."""
        path = self.path / TRAINER
        if not path.exists():
            raise CharRNNError(f"checkpoint {self.path} holds no training state, so it cannot be resumed")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure here means an unusable file
            raise CharRNNError(f"refusing to load {path}: {str(e).splitlines()[0]}") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(
    run_dir: Path,
    step: int,
    model: CharRNN,
    vocab: Vocab,
    meta: dict[str, Any],
    trainer_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically and return its directory."""
    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    weights = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(weights, tmp / WEIGHTS)
    if trainer_state is not None:
        torch.save(trainer_state, tmp / TRAINER)
    files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir())}
    full = {
        "format": FORMAT,
        "version": VERSION,
        "charrnn_version": __version__,
        "step": step,
        "vocab": vocab.chars,
        "model": asdict(model.config),
        **meta,
        "files": files,
    }
    (tmp / META).write_text(json.dumps(full, ensure_ascii=False, indent=1), encoding="utf-8")
    for p in tmp.iterdir():
        _fsync(p)
    _fsync(tmp)
    if final.exists():  # re-saving a step: swap the old one out, then delete it
        old = root / f".old-{final.name}-{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    _fsync(root)
    return final


def verify(path: Path) -> Checkpoint:
    """Read a checkpoint directory's metadata and check every file against its manifest."""
    meta_path = path / META
    if not meta_path.is_file():
        raise CharRNNError(f"{path} is not a charrnn checkpoint (no {META})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CharRNNError(f"checkpoint {path} has a corrupt {META}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CharRNNError(f"{path} is not a charrnn checkpoint (unknown format)")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise CharRNNError(
            f"checkpoint {path} has format version {meta.get('version')}, newer than this charrnn "
            f"({__version__}) reads: upgrade charrnn"
        )
    for name, want in meta.get("files", {}).items():
        file = path / name
        if not file.is_file() or file.stat().st_size != want["size"] or _sha256(file) != want["sha256"]:
            raise CharRNNError(f"checkpoint {path} is corrupt or incomplete: {name} does not match its manifest")
    if WEIGHTS not in meta.get("files", {}):
        raise CharRNNError(f"checkpoint {path} is incomplete: no {WEIGHTS}")
    return Checkpoint(path, meta)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories of a run, oldest first (temporary ones are never listed)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def _verified(paths: list[Path], warn: list[str]) -> list[Checkpoint]:
    good = []
    for path in paths:
        try:
            good.append(verify(path))
        except CharRNNError as e:
            warn.append(str(e))
    return good


def best_of(run_dir: Path, warn: list[str]) -> Checkpoint:
    """The good checkpoint with the lowest validation loss (the newest one if none has a loss)."""
    good = _verified(list_checkpoints(run_dir), warn)
    if not good:
        raise CharRNNError(f"no usable checkpoint in {run_dir}: run `charrnn train CORPUS` first")
    scored = [c for c in good if c.val_loss is not None]
    return min(scored, key=lambda c: (c.val_loss, -c.step)) if scored else good[-1]


def latest_of(run_dir: Path, warn: list[str]) -> Checkpoint:
    """The newest good checkpoint of a run, skipping corrupt ones."""
    good = _verified(list_checkpoints(run_dir), warn)
    if not good:
        raise CharRNNError(f"no usable checkpoint in {run_dir}: run `charrnn train CORPUS` first")
    return good[-1]


def prune(run_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints and the best one; delete the rest."""
    paths = list_checkpoints(run_dir)
    best = best_of(run_dir, []).path if paths else None
    for path in paths[:-keep]:
        if path != best:
            shutil.rmtree(path, ignore_errors=True)


def latest_run(runs_root: Path) -> Path:
    """The most recently started run under ``runs_root`` that has a checkpoint."""
    runs = [p for p in runs_root.iterdir() if p.is_dir() and list_checkpoints(p)] if runs_root.is_dir() else []
    if not runs:
        raise CharRNNError(
            f"no trained model found under {runs_root}/: run `charrnn train CORPUS` first, "
            "or pass --checkpoint PATH"
        )
    return max(runs, key=lambda p: (p / CHECKPOINTS).stat().st_mtime_ns)


def resolve(path: Path | None, runs_root: Path, warn: list[str], best: bool = True) -> Checkpoint:
    """Find the checkpoint a user means: a file in a checkpoint, a checkpoint, a run, or the latest run."""
    if path is None:
        path = latest_run(runs_root)
    if not path.exists():
        raise CharRNNError(f"checkpoint {path} does not exist")
    if path.is_file():
        path = path.parent
    if path.name == CHECKPOINTS:
        path = path.parent
    if (path / META).exists():
        return verify(path)
    if (path / CHECKPOINTS).is_dir():
        return best_of(path, warn) if best else latest_of(path, warn)
    raise CharRNNError(f"{path} is neither a charrnn run directory nor a checkpoint")
