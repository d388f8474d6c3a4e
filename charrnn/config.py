"""Run settings: frozen dataclasses, TOML loading and validation.

Precedence is defaults < config file < command-line flags. This module knows nothing of torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import tomllib

from charrnn.errors import CharRNNError

CELLS = ("rnn", "gru", "lstm", "mingru", "minlstm")
BATCHINGS = ("sequential", "random")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")
SOFTMAXES = ("auto", "full", "adaptive")
# softmax = "auto" uses the adaptive head from this many distinct characters: training chars/s of a 2x256 LSTM,
# adaptive / full, measured 0.96 at 1,000 and 1.71 at 3,000 (bench/softmax.py, bench/results/softmax.jsonl)
ADAPTIVE_VOCAB = 2000


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; stored in every checkpoint."""

    vocab_size: int
    cell: str = "lstm"
    embedding_size: int = 64
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.0
    cutoffs: tuple[int, ...] = ()  # adaptive softmax: shortlist size and cluster bounds (frequency ranks); () = full

    def __post_init__(self) -> None:
        """Check what a checkpoint from anywhere may claim, before torch builds anything from it."""
        object.__setattr__(self, "cutoffs", tuple(self.cutoffs))  # a JSON list reads back as a tuple
        _check_choice("cell", self.cell, CELLS)
        for name in ("embedding_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            _check(1 <= value <= LIMITS[name], f"{name} must be from 1 to {LIMITS[name]:,}, not {value}")
        _check(self.vocab_size >= 1, f"vocab_size must be at least 1, not {self.vocab_size}")
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), not {self.dropout}")
        ok = all(isinstance(c, int) and not isinstance(c, bool) for c in self.cutoffs) and len(self.cutoffs) <= 4
        bounds = (0, *self.cutoffs, self.vocab_size) if ok else ()
        _check(ok and all(a < b for a, b in zip(bounds, bounds[1:], strict=False)),
               f"cutoffs must be at most 4 increasing numbers between 0 and the vocabulary size, not {self.cutoffs}")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run. The defaults are the best general settings measured on corpora of five kinds
    and sizes (bench/RESULTS.md, "Defaults and auto-sizing"); with max_time, autosize.py sizes the model."""

    # model
    cell: str = "lstm"
    embedding_size: int = 64
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.1
    softmax: str = "auto"  # auto: adaptive from ADAPTIVE_VOCAB distinct characters, else full
    # data
    batch_size: int = 32
    seq_len: int = 64
    batching: str = "sequential"
    val_fraction: float = 0.1
    val_file: str | None = None  # validate on this file instead of the end of the corpus (which then all trains)
    # optimisation
    lr: float = 6e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    min_lr_ratio: float = 0.02
    lr_drop: float = 0.5  # the rate is multiplied by this whenever validation comes out above its best (1: never)
    clip: float = 1.0
    # length and cadence
    steps: int = 3000
    max_time: float | None = None
    eval_every: int = 250
    eval_chars: int = 250_000  # validation during training scores this much of the split (0: all of it)
    log_every: int = 10
    keep: int = 2
    sample_every: int = 0  # write a sample to samples.jsonl every N steps (0: never)
    sample_prefix: str = ""  # what the samples continue ("": a newline)
    # environment
    seed: int = 1337
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast on CPUs with native bf16, else fp32 (devices.py)

    def __post_init__(self) -> None:
        validate(self)

    def model_config(self, vocab_size: int, cutoffs: tuple[int, ...] = ()) -> ModelConfig:
        return ModelConfig(
            vocab_size=vocab_size,
            cell=self.cell,
            embedding_size=self.embedding_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            dropout=self.dropout,
            cutoffs=cutoffs,
        )

    def adaptive(self, vocab_size: int) -> bool:
        """Whether this run's model gets the adaptive softmax head."""
        return self.softmax == "adaptive" or (self.softmax == "auto" and vocab_size >= ADAPTIVE_VOCAB)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise CharRNNError(message)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, f"{name} must be one of {', '.join(choices)}, not {value!r}")


MAX_SEED = 2**63  # seeds are whole numbers in [0, 2**63): what torch and NumPy both accept
# Upper bounds far beyond any model that fits in memory; they turn a typo into a message instead of an
# integer overflow inside torch.
LIMITS = {"embedding_size": 1 << 16, "hidden_size": 1 << 16, "num_layers": 64, "batch_size": 1 << 24,
          "seq_len": 1 << 24, "steps": 2**53, "warmup_steps": 2**53, "eval_every": 2**53, "log_every": 2**53,
          "keep": 1 << 20, "sample_every": 2**53}


def check_seed(seed: object, name: str = "seed") -> None:
    """Reject a seed that torch or NumPy would refuse later (or that would wrap around)."""
    ok = isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < MAX_SEED
    _check(ok, f"{name} must be a whole number from 0 to 2**63 - 1, not {seed!r}")


def _check_types(cfg: TrainConfig) -> None:
    """Every setting has its declared type (ints are numbers too); every number is finite."""
    for name, want in _field_types().items():
        value = getattr(cfg, name)
        if name == "seed" or (value is None and name in ("max_time", "val_file")):
            continue  # check_seed says more
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if want is float:
            _check(number, f"{name} must be a number, not {value!r}")
            _check(math.isfinite(value), f"{name} must be a finite number, not {value!r}")
        elif want is int:
            _check(number and isinstance(value, int), f"{name} must be a whole number, not {value!r}")
        else:
            _check(isinstance(value, str), f"{name} must be a string, not {value!r}")


def validate(cfg: TrainConfig) -> None:
    """Reject values that cannot make a sensible run, with a message naming the setting."""
    _check_types(cfg)
    for name in ("embedding_size", "hidden_size", "num_layers", "batch_size", "seq_len",
                 "steps", "eval_every", "log_every", "keep"):
        _check(getattr(cfg, name) >= 1, f"{name} must be at least 1, not {getattr(cfg, name)}")
    for name, limit in LIMITS.items():
        _check(getattr(cfg, name) <= limit, f"{name} must be at most {limit:,}, not {getattr(cfg, name):,}")
    check_seed(cfg.seed)
    _check_choice("cell", cfg.cell, CELLS)
    _check_choice("batching", cfg.batching, BATCHINGS)
    _check_choice("device", cfg.device, DEVICES)
    _check_choice("precision", cfg.precision, PRECISIONS)
    _check_choice("softmax", cfg.softmax, SOFTMAXES)
    _check(0.0 <= cfg.dropout < 1.0, f"dropout must be in [0, 1), not {cfg.dropout}")
    _check(0.0 < cfg.val_fraction < 1.0, f"val_fraction must be in (0, 1), not {cfg.val_fraction}")
    _check(cfg.lr > 0, f"lr must be a positive number, not {cfg.lr}")
    _check(cfg.weight_decay >= 0, f"weight_decay must be >= 0, not {cfg.weight_decay}")
    _check(cfg.warmup_steps >= 0, f"warmup_steps must be >= 0, not {cfg.warmup_steps}")
    _check(0.0 <= cfg.min_lr_ratio <= 1.0, f"min_lr_ratio must be in [0, 1], not {cfg.min_lr_ratio}")
    _check(0.0 < cfg.lr_drop <= 1.0, f"lr_drop must be in (0, 1] (1 never drops the rate), not {cfg.lr_drop}")
    _check(cfg.clip >= 0, f"clip must be >= 0 (0 turns clipping off), not {cfg.clip}")
    _check(cfg.val_file != "", "val_file must name a file, not ''")
    _check(cfg.sample_every >= 0, f"sample_every must be >= 0 (0 turns samples off), not {cfg.sample_every}")
    _check(cfg.eval_chars >= 0, f"eval_chars must be >= 0 (0 scores the whole split), not {cfg.eval_chars}")
    if cfg.max_time is not None:
        _check(cfg.max_time > 0, f"max_time must be a positive number of seconds, not {cfg.max_time}")


def _field_types() -> dict[str, type]:
    types = {"int": int, "float": float, "str": str, "float | None": float, "str | None": str}
    return {f.name: types[str(f.type)] for f in fields(TrainConfig)}


def coerce(name: str, value: Any, source: str) -> Any:
    """Check one setting's type, naming where it came from; ints are accepted for floats."""
    types = _field_types()
    if name not in types:
        known = ", ".join(sorted(types))
        raise CharRNNError(f"unknown setting {name!r} in {source} (known settings: {known})")
    want = types[name]
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, want) or isinstance(value, bool):
        raise CharRNNError(f"{name} in {source} must be {want.__name__}, not {value!r}")
    return value


def load_file(path: Path) -> dict[str, Any]:
    """Read a flat TOML file of settings, checking every key and type."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CharRNNError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CharRNNError(f"cannot read config file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise CharRNNError(f"config file {path} is not valid TOML: {e}") from None
    return {key: coerce(key, value, str(path)) for key, value in raw.items()}


MODEL_SETTINGS = ("cell", "embedding_size", "hidden_size", "num_layers")  # a warm start keeps these


def given(path: Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    """The settings a user set explicitly: file < flags; flags whose value is None were not given."""
    values = load_file(path) if path is not None else {}
    values.update({k: coerce(k, v, "the command line") for k, v in flags.items() if v is not None})
    return values


# Settings a resumed run may change; any other change would make it a different run.
RESUMABLE = frozenset({"steps", "max_time", "eval_every", "log_every", "keep", "device", "precision", "sample_every",
                       "sample_prefix"})


def resolve_resume(saved: TrainConfig, path: Path | None, flags: dict[str, Any]) -> TrainConfig:
    """The saved settings of a run being resumed, with only the RESUMABLE ones open to change."""
    values = given(path, flags)
    for key, value in values.items():
        if key not in RESUMABLE and value != getattr(saved, key):
            raise CharRNNError(
                f"{key} is {value!r} but the run was trained with {getattr(saved, key)!r}: a resumed run keeps "
                f"its settings (only {', '.join(sorted(RESUMABLE))} may change); start a new run to change it"
            )
    return dataclasses.replace(saved, **values)


def to_toml(values: dict[str, Any]) -> str:
    """Write flat scalar settings as TOML that ``load_file`` reads back (None is left out)."""
    lines = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, str):  # JSON's \uD83D\uDE00 pairs are not TOML: escape only what TOML must
            quoted = json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
            lines.append(f"{key} = {quoted}")
        elif isinstance(value, bool):
            lines.append(f"{key} = {str(value).lower()}")
        else:
            lines.append(f"{key} = {value!r}")
    return "\n".join(lines) + "\n"
