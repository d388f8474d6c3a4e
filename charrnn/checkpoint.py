"""Every save and load of model files: checkpoint layout, format version, integrity, atomic writes.

A checkpoint is a directory ``RUN/checkpoints/step-NNNNNNNN/`` holding
  model.safetensors  the weights (no pickle: safe to share and to load),
  trainer.pt         optional resume-only state (tensors and plain data, loaded with weights_only=True),
  meta.json          format version, vocabulary, model config, step, metrics, and a manifest of the other
                     files' sizes and SHA-256 hashes, written last (its schema: schema.py).
It is built under a temporary name, fsynced and renamed, so it is complete or absent, never mixed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from charrnn import __version__
from charrnn.config import ModelConfig
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.schema import FORMAT, META_VERSION, CheckpointMeta, FileEntry, ResumeState
from charrnn.vocab import Vocab

WEIGHTS = "model.safetensors"
TRAINER = "trainer.pt"
META = "meta.json"
CHECKPOINTS = "checkpoints"
PREFIX = "step-"


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint on disk; weights are read only when asked for. ``skipped`` says why newer
    (or better) checkpoints of the same run were passed over to reach this one."""

    path: Path
    meta: CheckpointMeta
    skipped: tuple[str, ...] = ()

    @property
    def step(self) -> int:
        return self.meta.step

    @property
    def vocab(self) -> Vocab:
        return Vocab(self.meta.vocab)

    @property
    def model_config(self) -> ModelConfig:
        return self.meta.model

    @property
    def val_loss(self) -> float | None:
        return self.meta.metrics.val_loss

    def load_model(self, device: torch.device | str = "cpu") -> CharRNN:
        """The model with these weights. Its shape is checked against the weights file's header before
        anything is allocated, so metadata claiming a huge model costs nothing."""
        try:
            _check_shapes(self.path / WEIGHTS, self.model_config)
            weights = load_file(self.path / WEIGHTS, device="cpu")
            model = CharRNN(self.model_config)
            model.load_state_dict(weights)
        except (SafetensorError, RuntimeError, OSError) as e:
            raise CharRNNError(f"checkpoint {self.path} has unreadable weights ({e}): train again") from None
        return model.to(device)

    def resume_state(self) -> ResumeState:
        """The resume-only state, loaded without executing any code (weights_only=True)."""
        path = self.path / TRAINER
        if not path.exists():
            raise CharRNNError(f"checkpoint {self.path} holds no training state, so it cannot be resumed")
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure here means an unusable file
            raise CharRNNError(f"refusing to load {path}: {str(e).splitlines()[0]}") from None
        return ResumeState.from_dict(raw, str(path))


def _check_shapes(path: Path, config: ModelConfig) -> None:
    """Raise unless the weights file holds exactly the tensors of a model with ``config``."""
    with safe_open(path, "pt") as f:
        found = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    vocab, hidden = config.vocab_size, config.hidden_size
    cheap = {"embed.weight": (vocab, config.embedding_size), "head.weight": (vocab, hidden)}
    plausible = all(found.get(k) == v for k, v in cheap.items()) and config.num_layers < len(found)
    with torch.device("meta"):  # shapes only: nothing is allocated
        expected = {k: tuple(v.shape) for k, v in CharRNN(config).state_dict().items()} if plausible else {}
    if found != expected:
        raise RuntimeError(f"the weights do not fit the model the metadata describes ({config})")


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


def _umask() -> int:
    """This process's umask, read without changing it where Linux tells it (setting it is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save(run_dir: Path, model: CharRNN, meta: CheckpointMeta, resume: ResumeState | None = None) -> Path:
    """Write a checkpoint for ``meta.step`` atomically and return its directory (``meta.files`` is filled in)."""
    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{meta.step:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    weights = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(weights, tmp / WEIGHTS)
    os.chmod(tmp / WEIGHTS, 0o666 & ~_umask())  # safetensors creates it 0600; share it like the other files
    if resume is not None:
        torch.save(resume.to_dict(), tmp / TRAINER)
    files = {p.name: FileEntry(p.stat().st_size, _sha256(p)) for p in sorted(tmp.iterdir())}
    meta = replace(meta, files=files, charrnn_version=__version__)
    (tmp / META).write_text(json.dumps(meta.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
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
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CharRNNError(f"checkpoint {path} has a corrupt {META}: {e}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CharRNNError(f"{path} is not a charrnn checkpoint (unknown format)")
    if not isinstance(raw.get("version"), int) or raw["version"] > META_VERSION:
        raise CharRNNError(
            f"checkpoint {path} has format version {raw.get('version')}, newer than this charrnn "
            f"({__version__}) reads: upgrade charrnn"
        )
    meta = CheckpointMeta.from_dict(raw, f"checkpoint {path} {META}")
    for name, want in meta.files.items():
        file = path / name
        if not file.is_file() or file.stat().st_size != want.size or _sha256(file) != want.sha256:
            raise CharRNNError(f"checkpoint {path} is corrupt or incomplete: {name} does not match its manifest")
    if WEIGHTS not in meta.files:
        raise CharRNNError(f"checkpoint {path} is incomplete: no {WEIGHTS}")
    return Checkpoint(path, meta)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories of a run, oldest first (temporary ones are never listed)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def _verified(run_dir: Path) -> tuple[list[Checkpoint], tuple[str, ...]]:
    """The run's good checkpoints, oldest first, and why the others were skipped."""
    good, skipped = [], []
    for path in list_checkpoints(run_dir):
        try:
            good.append(verify(path))
        except CharRNNError as e:
            skipped.append(str(e))
    if not good:
        raise CharRNNError(f"no usable checkpoint in {run_dir}: run `charrnn train CORPUS` first")
    return good, tuple(skipped)


def best_of(run_dir: Path) -> Checkpoint:
    """The good checkpoint with the lowest validation loss (the newest one if none has a loss)."""
    good, skipped = _verified(run_dir)
    scored = [c for c in good if c.val_loss is not None]
    best = min(scored, key=lambda c: (c.val_loss, -c.step)) if scored else good[-1]
    return replace(best, skipped=skipped)


def latest_of(run_dir: Path) -> Checkpoint:
    """The newest good checkpoint of a run, skipping corrupt ones."""
    good, skipped = _verified(run_dir)
    return replace(good[-1], skipped=skipped)


def prune(run_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints and the best one; delete the rest."""
    paths = list_checkpoints(run_dir)
    best = best_of(run_dir).path if paths else None
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


def find(path: Path | None, runs_root: Path) -> Checkpoint:
    """The checkpoint a user means: a file in a checkpoint, a checkpoint, the best of a run, or the best of
    the latest run."""
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
        return best_of(path)
    raise CharRNNError(f"{path} is neither a charrnn run directory nor a checkpoint")
