"""The documentation cannot drift from the code: the README's Python example runs, the settings table matches
the defaults, and every message quoted in docs/errors.md is one the code prints."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import io
import re
from pathlib import Path

import pytest

from charrnn import run
from charrnn.config import TrainConfig
from tests.helpers import ROOT

DOCS = ROOT / "docs"


def code_blocks(markdown: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", markdown, flags=re.S)


def test_readme_python_example_runs(tmp_path: Path, tiny: TrainConfig, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (example,) = code_blocks((ROOT / "README.md").read_text(encoding="utf-8"), "python")
    (name,) = re.findall(r'charrnn\.load\("(runs/[^"]+)"\)', example)  # the run the example loads
    setup = run.prepare(ROOT / "data" / "sample.txt", flags={**dataclasses.asdict(tiny), "steps": 20},
                        out=tmp_path / name)
    run.fit(run.build_trainer(setup), setup)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example, "README.md", "exec"), {})  # noqa: S102 - our own README
    generated, _, scored = out.getvalue().rstrip("\n").rpartition("\n")  # the text may hold newlines itself
    assert generated.startswith("The machine") and len(generated) == len("The machine") + 60
    assert re.fullmatch(r"\d+\.\d\d bits/char", scored)


def test_settings_table_matches_the_defaults():
    rows = re.findall(r"^\| `--([\w-]+)` \| ([^|]*) \|", (DOCS / "settings.md").read_text(encoding="utf-8"), re.M)
    documented = {flag.replace("-", "_"): default.strip().strip("`") for flag, default in rows}
    for field in dataclasses.fields(TrainConfig):
        default = getattr(TrainConfig(), field.name)
        assert field.name in documented, f"docs/settings.md does not document {field.name}"
        assert documented[field.name] == ("none" if default is None else str(default)), field.name


def code_text() -> str:
    """Every constant piece of every string in charrnn/, f-string placeholders cut out (as line breaks)."""
    pieces = []
    for path in (ROOT / "charrnn").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                pieces.append(node.value)
    return "\n".join(pieces)


# In a quoted message: what varies from case to case (names, numbers, paths, quoted values, flags) or is
# abridged (CAPITALS stand for what varies); runs of four or more words between them must appear in the code.
VARIES = re.compile(r"'[^']*'|\([^)]*\)|\S*[/_.\d]\S*|--[\w-]+|\.\.\.|…|;|`|\b[A-Z]{2,}\b")


@pytest.mark.parametrize("doc", ["errors.md"])
def test_quoted_messages_are_the_codes_own(doc: str):
    text, missing = code_text(), []
    rows = re.findall(r"^\|[^|]*\| `((?:Error|Warning): [^`]*)`(?: / `([^`]*)`)?", (DOCS / doc).read_text(
        encoding="utf-8"), re.M)
    assert len(rows) >= 40
    for message in (m for row in rows for m in row if m):
        for chunk in VARIES.split(message.removeprefix("Error: ").removeprefix("Warning: ")):
            chunk = chunk.strip(" ;:,")
            if len(chunk.split()) >= 4 and chunk not in text:
                missing.append(f"{chunk!r} (in {message!r})")
    assert not missing, "docs quote messages the code no longer prints:\n" + "\n".join(missing)
