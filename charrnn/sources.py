"""What a corpus is read from: one file, or several files and folders of files, listed in a fixed order.

``charrnn train notes.txt`` reads one file as it always has (a pipe too). ``charrnn train DIR`` or
``charrnn train a.txt b.txt DIR ...`` makes a corpus of several files (corpus.py joins and caches them):

- the paths are taken in the order given; a folder stands for every file under it, recursively, in sorted
  path order (component by component, by code point);
- names starting with a dot (files and folders: .git, .DS_Store) are left out without a word;
- symbolic links to files are followed, links to folders are not (so a link loop cannot trap the walk);
- a charrnn run directory (one holding a run's ``.lock``) is skipped: ``charrnn train .`` must not learn from
  its own metrics, nor find its corpus changed by its own checkpoints;
- files that are not regular (pipes, sockets, devices, broken links) and files that do not look like text in
  the encoding (judged by their first 8 KiB: NUL bytes, UTF-16, bytes that do not decode) are skipped, and
  one warning says how many and names a few;
- a file named explicitly is never skipped: it must be a regular text file.

Nothing here reads a whole file; a later problem in a file is found when the corpus is encoded, and names the file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.corpus import Corpus, Progress, load_corpus, scan, text_problem
from charrnn.errors import CharRNNError
from charrnn.vocab import Vocab

NAMED = 3  # skipped files named in the warning
RUN_LOCK = ".lock"  # run.LOCK: the file that marks a charrnn run directory


@dataclass(frozen=True)
class Sources:
    """The paths a user named and the files they stand for, in order."""

    given: tuple[Path, ...]
    files: tuple[Path, ...]
    several: bool = False  # a corpus of several files (a folder counts as several, even with one file in it)
    warning: str | None = None  # files of a folder that were skipped

    @property
    def name(self) -> Path:
        return self.given[0]

    def load(self, encoding: str = "utf-8", errors: str = "strict", progress: Progress | None = None, *,
             vocab: Vocab | None = None, verify: bool = False) -> Corpus:
        """The corpus of these files (see ``corpus.load_corpus``)."""
        if not self.several:
            return load_corpus(self.files[0], encoding, errors, vocab, progress, verify)
        return load_corpus(self.files, encoding, errors, vocab, progress, verify, given=self.given)

    def scan(self, encoding: str = "utf-8", errors: str = "strict", progress: Progress | None = None) -> np.ndarray:
        """How often each code point occurs in the corpus (see ``corpus.scan``)."""
        return scan(self.files if self.several else self.files[0], encoding, errors, progress, self.name)[0]


def expand(given: Path | Sequence[Path], encoding: str = "utf-8", errors: str = "strict") -> Sources:
    """The files that ``given`` (a file, a folder, or a list of them) stands for; see the module's docstring."""
    given = (given,) if isinstance(given, Path) else tuple(given)
    if not given:
        raise CharRNNError("give the corpus to train on: a text file, several files, or a folder")
    if len(given) == 1 and not given[0].is_dir():
        return Sources(given, given)  # one file, read as it always was (a pipe or a device too)
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in given:
        if path.is_dir():
            found, odd = _walk(path, encoding, errors)
            files += found
            skipped += odd
        else:
            files.append(_named_file(path))
    if not files:
        raise CharRNNError(f"{_names(given)} holds no text files{_skipped_note(skipped, encoding)}: give a folder "
                           f"with {encoding} text files in it")
    warning = f"{_names(given)}: skipped {len(skipped)} of {len(files) + len(skipped)} entries that are not " \
              f"{encoding} text files: {_examples(skipped)}" if skipped else None
    return Sources(given, tuple(files), True, warning)


def _named_file(path: Path) -> Path:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CharRNNError(f"{path} does not exist: give the path of a text file or a folder") from None
    except OSError as e:
        raise CharRNNError(f"cannot read {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CharRNNError(f"{path} is not a regular file (a pipe or a device): give it alone, or save it to a file "
                           "first")
    return path


def _walk(root: Path, encoding: str, errors: str) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The text files under ``root`` in sorted path order, and the files skipped with why."""
    def failed(e: OSError) -> None:
        raise CharRNNError(f"cannot read the folder {e.filename}: {e.strerror or e}") from None

    found, skipped = [], []
    for folder, dirs, names in os.walk(root, onerror=failed):  # never follows links to folders
        here = Path(folder)
        if (here / RUN_LOCK).exists() and here != root:
            skipped.append((here, "a charrnn run"))
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".") and not _skipped_link(here / d, skipped)]
        for name in names:
            if name.startswith("."):
                continue
            path = here / name
            problem = _problem(path, encoding, errors)
            (skipped.append((path, problem)) if problem else found.append(path))
    order = lambda p: p.relative_to(root).parts  # noqa: E731 - a sort key
    return sorted(found, key=order), sorted(skipped, key=lambda s: order(s[0]))


def _skipped_link(path: Path, skipped: list[tuple[Path, str]]) -> bool:
    if path.is_symlink():
        skipped.append((path, "a link to a folder"))
        return True
    return False


def _problem(path: Path, encoding: str, errors: str) -> str | None:
    """Why a file under a folder is skipped, or None."""
    try:
        st = path.stat()
    except OSError:
        return "a broken link"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    return text_problem(path, encoding, errors)


def _names(given: Sequence[Path]) -> str:
    return str(given[0]) if len(given) == 1 else f"{given[0]} and {len(given) - 1} more"


def _examples(skipped: list[tuple[Path, str]]) -> str:
    shown = ", ".join(f"{path} ({why})" for path, why in skipped[:NAMED])
    return shown + (f" and {len(skipped) - NAMED} more" if len(skipped) > NAMED else "")


def _skipped_note(skipped: list[tuple[Path, str]], encoding: str) -> str:
    if not skipped:
        return ""
    return f" (skipped {len(skipped)} entries that are not {encoding} text)" if len(skipped) > 1 else \
        f" (skipped 1 entry that is not {encoding} text)"
