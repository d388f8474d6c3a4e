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
from safetensors import SafetensorError
from safetensors.torch import load
from safetensors.torch import save as save_weights

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
        model = CharRNN(self.model_config)
        model.load_state_dict(read_weights(self.path, self.model_config))
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


def read_weights(path: Path, config: ModelConfig) -> dict[str, torch.Tensor]:
    """The weights of checkpoint ``path``, checked to be exactly those of a model with ``config`` (from the file's
    header, before anything is allocated: metadata claiming a huge model costs nothing) and finite."""
    file = path / WEIGHTS
    try:
        data = file.read_bytes()  # bytes, not a path: safetensors wants paths in UTF-8, file names need not be
        found = _header_shapes(data)
    except (OSError, ValueError, RecursionError) as e:  # JSON nested too deep to read: RecursionError
        raise CharRNNError(f"checkpoint {path} has unreadable weights ({e})") from None
    vocab, hidden = config.vocab_size, config.hidden_size
    cheap = {"embed.weight": (vocab, config.embedding_size)}
    if config.cutoffs:  # the adaptive head: shortlist and one entry per cluster
        cheap["head.head.weight"] = (config.cutoffs[0] + len(config.cutoffs), hidden)
    else:
        cheap["head.weight"] = (vocab, hidden)
    plausible = all(found.get(k) == v for k, v in cheap.items()) and config.num_layers < len(found)
    with torch.device("meta"):  # shapes only: nothing is allocated
        expected = {k: tuple(v.shape) for k, v in CharRNN(config).state_dict().items()} if plausible else {}
    if found != expected:
        raise CharRNNError(f"checkpoint {path} has weights that do not fit the model its {META} describes")
    try:
        weights = load(data)
    except (SafetensorError, RuntimeError) as e:
        raise CharRNNError(f"checkpoint {path} has unreadable weights ({e})") from None
    if not all(torch.isfinite(w).all() for w in weights.values()):
        raise CharRNNError(f"checkpoint {path} has weights that are not finite (NaN or infinity)")
    rank = weights.get("head.rank")
    if rank is not None and (rank.dtype != torch.int64 or not torch.equal(rank.sort().values, torch.arange(vocab))):
        raise CharRNNError(f"checkpoint {path} has a damaged output layer: head.rank is not an ordering of the "
                           "vocabulary")
    return weights


def _header_shapes(data: bytes) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors header (8-byte little-endian length, then JSON)."""
    size = int.from_bytes(data[:8], "little")
    if len(data) < 8 or size > len(data) - 8:
        raise ValueError("the safetensors header is cut short")
    header = json.loads(data[8 : 8 + size])
    if not isinstance(header, dict):
        raise ValueError("the safetensors header is not an object")
    shapes = {}
    for name, entry in header.items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if name != "__metadata__":
            if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
                raise ValueError(f"tensor {name!r} has no valid shape")
            shapes[name] = tuple(shape)
    return shapes


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


def save(run_dir: Path, model: CharRNN, meta: CheckpointMeta, resume: ResumeState | None = None) -> Path:
    """Write a checkpoint for ``meta.step`` atomically and return its directory (``meta.files`` is filled in).
    If writing fails (a full disk, a file size limit), nothing is left behind and the previous checkpoints
    stay the resume point."""
    root = run_dir / CHECKPOINTS
    final = root / f"{PREFIX}{meta.step:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-*"):  # left by a process killed while saving
            shutil.rmtree(stale, ignore_errors=True)
        for old in root.glob(".old-*"):  # ... while re-saving a step: where it had swapped the step out, the step's
            step = root / old.name.removeprefix(".old-").rpartition("-")[0]  # only copy is this one: put it back
            if step.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.rename(step)
        tmp.mkdir()
        _write(tmp, model, meta, resume)
        if final.exists():  # re-saving a step: swap the old one out, then delete it
            old = root / f".old-{final.name}-{os.getpid()}"
            final.rename(old)
            try:
                tmp.rename(final)
            except BaseException:
                old.rename(final)
                raise
            shutil.rmtree(old)
        else:
            tmp.rename(final)
        _fsync(root)
    except (OSError, RuntimeError, SafetensorError) as e:  # torch.save reports a failed write as a RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        raise CharRNNError(f"cannot write a checkpoint in {root} ({reason}); nothing was saved and the previous "
                           "checkpoint is kept: free some disk space, then resume with charrnn train --resume",
                           exit_code=1) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write(tmp: Path, model: CharRNN, meta: CheckpointMeta, resume: ResumeState | None) -> None:
    weights = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    (tmp / WEIGHTS).write_bytes(save_weights(weights))
    if resume is not None:
        torch.save(resume.to_dict(), tmp / TRAINER)
    files = {p.name: FileEntry(p.stat().st_size, _sha256(p)) for p in sorted(tmp.iterdir())}
    meta = replace(meta, files=files, charrnn_version=__version__)
    # ASCII with \u escapes: a path that is not valid UTF-8 (held as lone surrogates) survives the round trip
    (tmp / META).write_text(json.dumps(meta.to_dict(), indent=1), encoding="utf-8")
    for p in tmp.iterdir():
        _fsync(p)
    _fsync(tmp)


MAX_META = 1 << 26  # bytes: a meta.json of a vocabulary of millions of characters is still far smaller


def read_meta(path: Path) -> CheckpointMeta:
    """A checkpoint directory's metadata, checked field by field (its other files are not read)."""
    meta_path = path / META
    if not meta_path.is_file():
        raise CharRNNError(f"{path} is not a charrnn checkpoint (no {META})")
    try:
        if meta_path.stat().st_size > MAX_META:
            raise ValueError(f"it is larger than {MAX_META:,} bytes")
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # JSON errors are ValueErrors; RecursionError: [[[[...
        raise CharRNNError(f"checkpoint {path} has a corrupt {META}: {e}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CharRNNError(f"{path} is not a charrnn checkpoint (unknown format)")
    if not isinstance(raw.get("version"), int) or raw["version"] > META_VERSION:
        raise CharRNNError(
            f"checkpoint {path} has format version {raw.get('version')}, newer than this charrnn "
            f"({__version__}) reads: upgrade charrnn"
        )
    return CheckpointMeta.from_dict(raw, f"checkpoint {path} {META}")


def verify(path: Path) -> Checkpoint:
    """Read a checkpoint directory's metadata and check every file against its manifest."""
    meta = read_meta(path)
    if not set(meta.files) <= {WEIGHTS, TRAINER}:  # never a path: nothing outside the checkpoint is read
        raise CharRNNError(f"checkpoint {path} has a damaged {META}: its manifest names files it cannot hold")
    for name, want in meta.files.items():
        file = path / name
        try:
            matches = file.is_file() and file.stat().st_size == want.size and _sha256(file) == want.sha256
        except OSError:  # e.g. removed while it was read: a training beside pruned it
            matches = False
        if not matches:
            raise CharRNNError(f"checkpoint {path} is corrupt or incomplete: {name} does not match its manifest")
    if WEIGHTS not in meta.files:
        raise CharRNNError(f"checkpoint {path} is incomplete: no {WEIGHTS}")
    read_weights(path, meta.model)
    return Checkpoint(path, meta)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories of a run, oldest first (temporary ones are never listed)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdecimal()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))  # by step: step 10**8 has nine digits


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
