"""devices.py: threads and noticing contention for the CPU (resolving --device is tested through the CLI)."""

import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from charrnn import devices
from charrnn.errors import CharRNNError


def test_contention_is_told_once_after_two_slow_windows_in_a_row():
    watch = devices.Contention()
    heard = [watch.slowed(speed) for speed in [10, 400, 500, 480, 110, 130, 90, 480, 100, 90, 80, 50]]
    # 110 and 130 are above a quarter of 500; 90 alone is one slow window; 100, 90 are two in a row: told once
    assert heard == [False] * 9 + [True, False, False]
    assert watch.best == 500


def test_a_slow_start_is_not_contention():
    watch = devices.Contention()
    assert not any(watch.slowed(speed) for speed in [1, 2, 50, 400, 420, 390, 410])


def test_set_threads():
    before = torch.get_num_threads()
    try:
        assert devices.set_threads(None) == before
        assert devices.set_threads(1) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    with pytest.raises(CharRNNError, match="--threads must be at least 1, not 0"):
        devices.set_threads(0)


XEON_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\nbogomips\t: 4000\n"
XEON = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"


def test_cpu_flags_are_read_from_cpuinfo():
    assert {"avx512f", "avx512_bf16"} <= devices.cpu_flags(XEON_BF16) and "bogomips" not in devices.cpu_flags(XEON_BF16)
    assert "bf16" in devices.cpu_flags(GRAVITON)
    assert devices.cpu_flags("") == frozenset()


@pytest.mark.parametrize(("cpuinfo", "device", "expected"), [
    (XEON_BF16, "cpu", torch.bfloat16),  # native bf16: bf16 measured better at 100 s and 600 s
    (XEON_BF16.replace("avx512_bf16 amx_tile", "amx_bf16"), "cpu", torch.bfloat16),
    (XEON, "cpu", None),  # AVX-512 without bf16: bf16 would be emulated, ~100x slower
    (GRAVITON, "cpu", None),  # never measured: fp32
    (XEON_BF16, "cuda", None),  # cuDNN's LSTM measured slower in bf16
])
def test_auto_precision_is_bf16_only_where_it_measured_better(cpuinfo, device, expected):
    assert devices.autocast_dtype("auto", device, devices.cpu_flags(cpuinfo)) is expected


def test_explicit_precision_is_obeyed_on_any_cpu():
    assert devices.autocast_dtype("bf16", "cpu", frozenset()) is torch.bfloat16
    assert devices.autocast_dtype("fp32", "cpu", devices.cpu_flags(XEON_BF16)) is None


# `charrnn train` entered with or without the setting (main() makes it; app() alone does not)
_ENTER = """
import sys
from charrnn import devices
from charrnn.cli import app
if sys.argv[1] == "reuse":
    assert devices.reuse_freed_memory()
app(sys.argv[2:], prog_name="charrnn")
"""


def _page_faults(mode: str, corpus: Path, out: Path) -> int:
    """The fresh pages the kernel handed a training run of 2x256 for 80 steps (minor page faults)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    if mode == "default":  # glibc's starting thresholds, held: left free, glibc raises them after a large block is
        # freed, and a run without the setting sometimes warmed itself (162k faults once against 420-580k)
        environ |= {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    done = subprocess.run([sys.executable, "-c", _ENTER, mode, "train", str(corpus), "--steps", "80", "--hidden-size",
                           "256", "--eval-every", "1000", "--eval-chars", "2000", "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, env=environ)
    assert done.returncode == 0, done.stderr
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before


@pytest.mark.slow
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_training_reuses_freed_memory_instead_of_faulting_in_fresh_pages(corpus: Path, tmp_path: Path):
    # measured in bench/allocator.py: ~10,000 page faults a step without, a few hundred with
    assert _page_faults("reuse", corpus, tmp_path / "a") * 3 < _page_faults("default", corpus, tmp_path / "b")


def test_an_allocator_the_user_chose_is_left_alone(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert not devices.reuse_freed_memory()
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert not devices.reuse_freed_memory()


def test_every_command_reuses_freed_memory(monkeypatch: pytest.MonkeyPatch):
    import charrnn.cli

    calls = []
    monkeypatch.setattr(devices, "reuse_freed_memory", lambda: calls.append(1))
    monkeypatch.setattr(sys, "argv", ["charrnn", "--version"])
    with pytest.raises(SystemExit):
        charrnn.cli.main()
    assert calls == [1]
