"""``charrnn generate --check-copy``: after each sample, one line on stderr saying how much of it also occurs in
the run's training split (the text alone stays on stdout); ``--copy-report FILE`` writes the same as JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

from charrnn import checkpoint, copycheck, run
from charrnn.cli.views import BarView, err, reading_view, say
from charrnn.errors import CharRNNError, printable

SHOWN = 60  # characters of the longest span shown on the line


class CopyChecker:
    """Checks each sample as it is generated; ``finish`` writes the report file, if one was asked for."""

    def __init__(self, ckpt: checkpoint.Checkpoint, report: Path | None) -> None:
        if report is not None and not report.parent.is_dir():
            raise CharRNNError(f"--copy-report {printable(report)}: the directory {printable(report.parent)} does "
                               "not exist")
        self.report, self.rows = report, []
        with reading_view() as reading:
            train, corpus = run.training_split(ckpt, "--check-copy", reading.update)
        building = BarView(1_000_000, TextColumn("indexing the training split"), BarColumn(),
                           TextColumn("{task.completed:,.0f}/{task.total:,.0f} suffixes sorted"), TimeElapsedColumn(),
                           transient=True)
        progress = building.update if err.is_terminal else None  # a bar only where it can be redrawn
        with building:
            self.index = copycheck.open_index(train, corpus, progress, lambda n: say(
                f"indexing the training split ({n:,} characters) for --check-copy; done once, then cached"))

    def add(self, sample: str) -> None:
        r = self.index.check(sample)
        self.rows.append({"sample": len(self.rows) + 1, **r.to_dict()})
        span = json.dumps(r.span if len(r.span) <= SHOWN else r.span[: SHOWN - 1] + "…", ensure_ascii=False)
        say(f"copy check, sample {len(self.rows)}: {r.share:.1%} of {r.chars:,} characters lie in spans of "
            f"{r.min_span}+ that also occur in the training split; the longest common span is {r.longest:,} "
            f"characters at {r.at:,} (training split character {r.source_at:,}): {span}")

    def finish(self) -> None:
        self.index.close()
        if self.report is None:
            return
        try:
            run.write_atomic(self.report, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in self.rows))
        except OSError as e:
            raise CharRNNError(f"cannot write --copy-report {printable(self.report)}: {e.strerror or e}") from None
