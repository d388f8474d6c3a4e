"""Where the model runs: resolving ``--device``, a data-parallel worker's share of the machine, ``--threads``,
how the process reuses freed memory, noticing another process competing for the CPU, TF32, and which recurrent
cells have fused kernels. Train, generate and eval all go through here.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from charrnn.dist import World
from charrnn.errors import CharRNNError

# Cells that torch.nn runs as one fused kernel (cuDNN on CUDA, oneDNN on CPU) and that have fused one-step
# ATen cell functions; the min* cells are plain PyTorch code.
FUSED_CELLS = ("rnn", "gru", "lstm")


def resolve(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU; an explicit device must be present."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CharRNNError("--device cuda was asked for but no CUDA GPU is available: use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise CharRNNError("--device mps was asked for but MPS is not available: use --device cpu or auto")
    if name not in ("cpu", "cuda", "mps"):
        raise CharRNNError(f"--device must be one of auto, cpu, cuda, mps, not {name!r}")
    return torch.device(name)


def for_worker(name: str, world: World) -> torch.device:
    """The device this process trains on: the resolved one, or under torchrun its own GPU or its share of
    the CPU cores. Also turns on TF32 tensor cores for fp32 matmuls on CUDA (cuDNN's RNNs already use them)."""
    device = resolve(name)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    if not world.enabled:
        return device
    if device.type == "cuda":
        return torch.device("cuda", world.local_rank)
    if device.type != "cpu":
        raise CharRNNError(f"distributed training runs on CUDA or CPU, not {device.type}")
    # torchrun sets one thread per worker; share this machine's cores among the local workers instead
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // world.local_world_size))
    return device


# glibc's malloc hands blocks above a threshold to the kernel on every free and trims the top of the heap above
# another: a training step frees and re-allocates the same megabytes each time, and each time the kernel maps
# and zeroes fresh pages. 2x256 on tiny shakespeare took 2.1 million page faults and 4.9 s of system time in a
# 12 s run (bench/allocator.py)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (<malloc.h>)
MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts: smaller blocks come from the heap, and are reused
TRIM_THRESHOLD = 1 << 30  # free memory at the top of the heap kept for the next step, up to this much


def on_glibc() -> bool:
    """Whether this process runs on glibc (asked of the C library itself, not read from the executable)."""
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # no confstr, or no such name: not glibc
        return False


def reuse_freed_memory() -> bool:
    """Make glibc's malloc keep the memory a step frees for the next one instead of returning it to the kernel.
    Left alone where the user chose (``MALLOC_*_THRESHOLD_`` set, an allocator preloaded) or the C library is
    not glibc. Returns whether it was done. The command line does this for every command; a program that
    trains with the library calls it once, first."""
    chosen = any(k.startswith("MALLOC_") and k.endswith("THRESHOLD_") for k in os.environ)
    if not on_glibc() or chosen or "malloc" in os.environ.get("LD_PRELOAD", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1


def set_threads(threads: int | None) -> int:
    """Use ``threads`` CPU threads (None: leave torch's choice, one per core); returns the number in use."""
    if threads is not None:
        if threads < 1:
            raise CharRNNError(f"--threads must be at least 1, not {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


@dataclass
class Contention:
    """Notices training slowing down the way it does when another process competes for the same CPU cores (two
    torch processes on two cores ran ~20x slower than one alone: bench/contention.py): ``slowed`` is true once,
    when ``windows`` training windows in a row run below ``ratio`` of the fastest window so far."""

    ratio: float = 0.25
    windows: int = 2
    best: float = 0.0  # chars/s of the fastest window so far
    low: int = 0  # slow windows in a row
    told: bool = False

    def slowed(self, chars_per_s: float) -> bool:
        self.low = self.low + 1 if chars_per_s < self.ratio * self.best else 0
        self.best = max(self.best, chars_per_s)
        if self.low < self.windows or self.told:
            return False
        self.told = True
        return True


# precision = "auto" is bf16 autocast on a CPU with native bf16 (AVX-512-BF16 or AMX), whatever the budget: on a
# 2-core Xeon with AMX it trained a 2x256 1.9x as fast, and auto-sized for that speed it ended 0.041-0.054 nats
# below fp32 at 100 s on three corpora and 0.008-0.022 below at 600 s on three; an fp32 finish (the last 20 % of the
# run without autocast) cost steps and ended 0.002-0.015 above bf16 throughout (bench/RESULTS.md, session 12)
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (or from ``cpuinfo``, its text); empty where there is none."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return frozenset()
    line = next((line for line in cpuinfo.splitlines() if line.split(":", 1)[0].strip() in ("flags", "Features")), "")
    return frozenset(line.partition(":")[2].split())


def autocast_dtype(precision: str, device: str = "cpu", flags: frozenset[str] | None = None) -> torch.dtype | None:
    """The autocast dtype for training, or None for plain fp32 (TF32 on CUDA).

    ``auto`` is bf16 only on a CPU with native bf16 (``flags``: this CPU's), and fp32 everywhere else: on CPUs
    without AVX-512-BF16 or AMX, bf16 is ~100x slower, and on an H100 cuDNN's LSTM trained *slower* under bf16
    autocast than in fp32 (bench/RESULTS.md)."""
    if precision != "auto":
        return torch.bfloat16 if precision == "bf16" else None
    if device != "cpu":
        return None
    return torch.bfloat16 if NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else flags) else None
