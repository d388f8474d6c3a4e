"""What every command shares: the Typer app, turning library errors into one line and an exit code, and the
options several commands take (declared once here)."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
import termios
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TextIO, TypeVar

import torch
import typer

from charrnn import checkpoint, devices, run
from charrnn.cli.views import say, warn
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN

app = typer.Typer(
    help="Train character-level recurrent language models on your own text.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

Command = TypeVar("Command", bound=Callable[..., Any])

CheckpointOption = Annotated[Path | None, typer.Option(
    "--checkpoint", help="Run directory or checkpoint. [default: best checkpoint of the latest run]",
    show_default=False)]
DeviceOption = Annotated[str, typer.Option(help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps.")]
ThreadsOption = Annotated[int | None, typer.Option(
    help="CPU threads torch may use (fewer when other programs need the cores too). [default: one per core]",
    show_default=False)]
EncodingOption = Annotated[str, typer.Option(help="Text encoding of the file.")]
ErrorsOption = Annotated[str, typer.Option(help="On undecodable bytes: strict, replace or ignore.")]
ERRORS_POLICIES = ("strict", "replace", "ignore")


def user_errors(fn: Command) -> Command:
    """Turn the library's errors (and Ctrl-C, and running out of memory) into one line and an exit code;
    show the library's warnings as ``Warning:`` lines."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = lambda message, *rest: say(f"Warning: {message}")
                result = fn(*args, **kwargs)
            if sys.stdout is not None:
                sys.stdout.flush()  # a full disk or a closed pipe shows here, not as a traceback at exit
            return result
        except UnicodeEncodeError as e:
            say(f"Error: the output's encoding ({e.encoding}) cannot show {e.object[e.start:e.end]!r}: set "
                "PYTHONIOENCODING=utf-8 (or a UTF-8 locale)")
            raise typer.Exit(1) from None
        except (BrokenPipeError, OSError) as e:
            if not _is_stdout(e):
                raise
            _silence_stdout()
            if isinstance(e, BrokenPipeError):  # the reader left (`| head`): nothing to say
                raise typer.Exit(141) from None
            say(f"Error: cannot write the output: {e.strerror or e}")
            raise typer.Exit(1) from None
        except CharRNNError as e:
            say(f"Error: {e}")
            raise typer.Exit(e.exit_code) from None
        except (torch.OutOfMemoryError, MemoryError):
            out_of_memory()
        except RuntimeError as e:  # the CPU allocator reports running out as a plain RuntimeError
            if "can't allocate memory" not in str(e) and "out of memory" not in str(e):
                raise
            out_of_memory()
        except run.Interrupted as e:
            say(f"{e}: stopped at once.")
            raise typer.Exit(128 + e.signum) from None
        except KeyboardInterrupt:
            say("Interrupted.")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _is_stdout(e: OSError) -> bool:
    """Whether an OSError came from writing the standard output (a closed pipe, a full disk, a closed stream)."""
    return isinstance(e, BrokenPipeError) or e.errno in (errno.ENOSPC, errno.EBADF, errno.EFBIG, errno.EIO)


def _silence_stdout() -> None:
    """Point the standard output at /dev/null, so that flushing it again at exit cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):
        pass


def leave_a_closed_terminal() -> None:
    """Point the standard output and error at /dev/null where they are a terminal that has been hung up (its
    window closed: writing to it fails from then on), so that a run told so by SIGHUP can still save and exit."""
    for fd in (1, 2):
        try:
            termios.tcgetattr(fd)
        except termios.error as e:
            if e.args[0] == errno.EIO:
                with contextlib.suppress(OSError):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), fd)


def stdout() -> TextIO:
    """The standard output, for the product; an error if it was closed (``>&-``)."""
    if sys.stdout is None:
        raise CharRNNError("the standard output is closed: redirect it to a file instead, e.g. > out.txt")
    return sys.stdout


def out_of_memory() -> None:
    say("Error: out of memory: the model or batch does not fit; lower --batch-size, --seq-len or --hidden-size")
    raise typer.Exit(3) from None


def check_errors_policy(errors: str) -> None:
    if errors not in ERRORS_POLICIES:
        raise CharRNNError(f"--errors must be strict, replace or ignore, not {errors!r}")


def load(path: Path | None, device: str) -> tuple[checkpoint.Checkpoint, CharRNN, torch.device]:
    """The checkpoint a user means and its model on the device, saying which one it is (and why, if newer ones
    are damaged)."""
    ckpt = checkpoint.find(path, run.RUNS_ROOT)
    warn(ckpt.skipped, "; using an older checkpoint")
    scored = "not scored" if ckpt.val_loss is None else f"val loss {ckpt.val_loss:.4f}"
    say(f"using {ckpt.path} (step {ckpt.step}, {scored})")
    dev = devices.resolve(device)
    return ckpt, ckpt.load_model(dev), dev
