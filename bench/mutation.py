"""Mutation testing: plant one small bug at a time in a module and see whether its tests notice.

    python bench/mutation.py --module sample [--module evaluate ...] [--jobs 1] [--within NAME] [--list]
    python bench/mutation.py --module charrnn/train.py --tests tests/test_train.py --within Trainer.train_step

Each mutant is one standard change, made with ``ast`` on a single node of the source and spliced back into
the original text (the rest of the file is untouched):

  operators    + - * / // % ** << >> & | swapped, ``+=`` → ``-=`` ..., ``<`` ↔ ``<=``, ``>`` ↔ ``>=``,
               ``==`` ↔ ``!=``, ``is`` ↔ ``is not``, ``in`` ↔ ``not in``, ``and`` ↔ ``or``, ``not x`` → ``x``,
               ``-x`` → ``x``, ``min`` ↔ ``max``
  constants    0 → 1, 1 → 0, n → n + 1, x.y → 2 × x.y (0.0 → 1.0), True ↔ False
  arguments    each positional argument and each keyword argument of a call dropped
  conditions   ``if c:`` / ``c if ... else`` → True, False, not c
  statements   a simple statement replaced by ``pass``; ``return x`` → ``return None``

Never mutated: docstrings, type annotations, strings (messages are noise), what a ``raise`` says (removing
the ``raise`` is a mutant), decorators, imports, and module-level constants (tunables such as a chunk size
change speed, not results; names such as a file name are data). Mutants that produce the same source as
another are run once.

Every mutant runs in a temporary copy of the repository (one per job), never in the working tree, with
``pytest -x -q -p no:cacheprovider TESTS``; a mutant is killed when the tests fail or run past the timeout
(a multiple of the unmutated run's time). By default a server per job imports torch once and forks each
pytest run (charrnn and the tests are imported afresh in the fork); ``--no-fork`` runs
``python -m pytest`` as a new process instead: the same outcomes on all 62 mutants of step.py, 7x slower.
Prints, per module, killed / total and the survivors as
``file:line  before  →  after``. ``--json PATH`` also writes every result as one JSON line each.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# module (charrnn/NAME.py) -> the test files that own it; a module not listed uses tests/test_NAME.py
TESTS = {
    "sample": ["tests/test_sample.py"],
    "evaluate": ["tests/test_evaluate.py"],
    "data": ["tests/test_data.py"],
    "vocab": ["tests/test_vocab.py"],
    "step": ["tests/test_step.py", "tests/test_sample.py"],
    "model": ["tests/test_model.py"],
    "checkpoint": ["tests/test_checkpoint.py"],
    "corpus": ["tests/test_corpus.py"],
    "train": ["tests/test_train.py"],
    "minrnn": ["tests/test_minrnn.py"],
}
CORE = ["sample", "evaluate", "data", "vocab", "step", "model", "checkpoint", "corpus"]

IGNORE = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis",
                                "runs", "results", "*.egg-info", "build", "dist")

BINOP_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
               ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.LShift: ast.RShift, ast.RShift: ast.LShift,
               ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd, ast.BitXor: ast.BitAnd}
CMP_SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
NAME_SWAPS = {"min": "max", "max": "min"}


@dataclass(frozen=True)
class Mutant:
    module: str  # the module's path relative to the repository
    line: int
    kind: str
    before: str  # the first source line of the mutated node, as written
    after: str  # the same line after the change
    source: str  # the whole mutated file


def _spans(tree: ast.AST) -> tuple[set[int], set[int], set[int]]:
    """Node ids never to mutate (docstrings, annotations, raise messages, decorators, f-strings, module
    constants), ids of nodes that are ``if`` tests, and ids of statements directly in a class body."""
    skip: set[int] = set()

    def skip_all(node: ast.AST | None) -> None:
        if node is not None:
            skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            skip_all(body[0])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            skip_all(node.returns)
            for a in [*node.args.args, *node.args.posonlyargs, *node.args.kwonlyargs, node.args.vararg,
                      node.args.kwarg]:
                if a is not None:
                    skip_all(a.annotation)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for d in node.decorator_list:
                skip_all(d)
        if isinstance(node, ast.AnnAssign):
            skip_all(node.annotation)
        if isinstance(node, ast.Raise):
            skip_all(node.exc)
            skip_all(node.cause)
            skip.discard(id(node))
        if isinstance(node, ast.JoinedStr):
            skip_all(node)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            skip_all(node)
    for stmt in tree.body:  # module level: constants, aliases, imports
        if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.Expr, ast.If)):
            skip_all(stmt)
    tests = {id(n.test) for n in ast.walk(tree) if isinstance(n, (ast.If, ast.IfExp))}
    fields = {id(s) for n in ast.walk(tree) if isinstance(n, ast.ClassDef) for s in n.body}
    return skip, tests, fields


def _qualnames(tree: ast.AST) -> dict[int, str]:
    """id(node) -> the dotted name of the function or class it is in ('' at module level)."""
    names: dict[int, str] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = prefix
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{prefix}.{child.name}" if prefix else child.name
            names[id(child)] = inner
            visit(child, inner)

    visit(tree, "")
    return names


def _variants(node: ast.AST, is_test: bool, in_class: bool) -> Iterator[tuple[str, ast.AST | str]]:
    """(kind, replacement) for one node: a new node, or replacement text for the node's span."""
    if isinstance(node, ast.BinOp) and type(node.op) in BINOP_SWAPS:
        yield "operator", ast.BinOp(node.left, BINOP_SWAPS[type(node.op)](), node.right)
    if isinstance(node, ast.AugAssign) and type(node.op) in BINOP_SWAPS:
        yield "operator", ast.AugAssign(node.target, BINOP_SWAPS[type(node.op)](), node.value)
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in CMP_SWAPS:
                ops = list(node.ops)
                ops[i] = CMP_SWAPS[type(op)]()
                yield "comparison", ast.Compare(node.left, ops, node.comparators)
    if isinstance(node, ast.BoolOp):
        yield "boolean", ast.BoolOp(ast.Or() if isinstance(node.op, ast.And) else ast.And(), node.values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        yield "unary", node.operand
    if isinstance(node, ast.Constant) and not isinstance(node.value, (str, bytes)) and node.value is not None:
        v = node.value
        if isinstance(v, bool):
            yield "constant", ast.Constant(not v)
        elif isinstance(v, int):
            yield "constant", ast.Constant({0: 1, 1: 0}.get(v, v + 1))
        elif isinstance(v, float):
            yield "constant", ast.Constant(v * 2 if v else 1.0)
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id in NAME_SWAPS:
            yield "operator", ast.Call(ast.Name(NAME_SWAPS[node.func.id]), node.args, node.keywords)
        for i in range(len(node.args)):
            yield "argument", ast.Call(node.func, node.args[:i] + node.args[i + 1:], node.keywords)
        for i in range(len(node.keywords)):
            yield "argument", ast.Call(node.func, node.args, node.keywords[:i] + node.keywords[i + 1:])
    if is_test:
        yield "condition", "True"
        yield "condition", "False"
        if not (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)):  # else the same as "unary"
            yield "condition", ast.UnaryOp(ast.Not(), node)
    if isinstance(node, (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Raise, ast.Assert, ast.Delete)) \
            and not in_class:  # a statement in a class body declares a field: its default is mutated instead
        yield "statement", "pass"
    if isinstance(node, ast.Return) and node.value is not None \
            and not (isinstance(node.value, ast.Constant) and node.value.value is None):
        yield "return", "return None"


def _splice(lines: list[str], node: ast.AST, text: str) -> str:
    """The source with the span of ``node`` replaced by ``text``."""
    first, last = node.lineno - 1, node.end_lineno - 1
    head = lines[first][:_col(lines[first], node.col_offset)]
    tail = lines[last][_col(lines[last], node.end_col_offset):]
    return "".join(lines[:first]) + head + text + tail + "".join(lines[last + 1:])


def _col(line: str, byte_offset: int) -> int:
    """ast column offsets count UTF-8 bytes; string slicing counts characters."""
    return len(line.encode("utf-8")[:byte_offset].decode("utf-8", "replace"))


def mutants(path: Path, within: str | None = None) -> list[Mutant]:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    skip, tests, fields = _spans(tree)
    names = _qualnames(tree)
    rel = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    seen = {source}
    out = []
    for node in ast.walk(tree):
        if id(node) in skip or not hasattr(node, "lineno"):
            continue
        if within is not None and not names.get(id(node), "").startswith(within):
            continue
        for kind, repl in _variants(node, id(node) in tests, id(node) in fields):
            if isinstance(repl, ast.AST):
                text = ast.unparse(ast.fix_missing_locations(copy.copy(repl)))
                if isinstance(node, ast.expr):
                    text = f"({text})"  # keeps precedence wherever the span sits
            else:
                text = repl
            new = _splice(lines, node, text)
            if new in seen:
                continue
            try:
                compile(new, rel, "exec")
            except SyntaxError:
                continue
            seen.add(new)
            new_lines = new.splitlines()
            after = new_lines[node.lineno - 1] if node.lineno - 1 < len(new_lines) else ""
            out.append(Mutant(rel, node.lineno, kind, lines[node.lineno - 1].rstrip("\n"), after, new))
    return sorted(out, key=lambda m: (m.line, m.kind, m.after))


def resolve(name: str) -> tuple[Path, list[str]]:
    """A module name (``sample``) or path (``charrnn/sample.py``) -> (path, its test files)."""
    path = Path(name) if name.endswith(".py") else ROOT / "charrnn" / f"{name}.py"
    path = path if path.is_absolute() else ROOT / path
    if not path.is_file():
        sys.exit(f"no module {path}")
    return path.resolve(), TESTS.get(path.stem, [f"tests/test_{path.stem}.py"])


# --fork: a server in the sandbox imports the heavy third-party modules once (not charrnn) and forks one
# pytest per mutant, which then imports charrnn and the tests afresh from the sandbox: the same tests and
# flags as ``python -m pytest``, without paying for ``import torch`` every time.
FORK_SERVER = r"""
import os, signal, sys, time
import numpy, torch, safetensors.torch, hypothesis, pytest  # noqa: F401
print("ready", flush=True)
for line in sys.stdin:
    timeout, *tests = line.split()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os._exit(int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests])))
    deadline = time.monotonic() + float(timeout)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print("survived" if os.waitstatus_to_exitcode(status) == 0 else "killed", flush=True)
            break
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            print("timeout", flush=True)
            break
        time.sleep(0.01)
"""


class Sandbox:
    """A private copy of the repository in which one mutant at a time is written and tested."""

    def __init__(self, base: Path, fork: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="charrnn-mut-", dir=base))
        shutil.copytree(ROOT, self.dir, ignore=IGNORE, dirs_exist_ok=True)
        self.env = {**os.environ, "PYTHONPATH": str(self.dir), "PYTHONDONTWRITEBYTECODE": "1",
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        found = subprocess.run([sys.executable, "-c", "import charrnn; print(charrnn.__file__)"], cwd=self.dir,
                               env=self.env, capture_output=True, text=True, check=True).stdout.strip()
        if not Path(found).resolve().is_relative_to(self.dir.resolve()):
            sys.exit(f"the sandbox imports charrnn from {found}, not from its copy: refusing to go on")
        self.server = None
        if fork:
            self.server = subprocess.Popen([sys.executable, "-c", FORK_SERVER], cwd=self.dir, env=self.env,
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert self.server.stdout.readline().strip() == "ready"

    def close(self) -> None:
        if self.server is not None:
            self.server.stdin.close()
            self.server.wait()

    def _pytest(self, tests: list[str], timeout: float) -> str:
        if self.server is not None:
            self.server.stdin.write(f"{timeout} {' '.join(tests)}\n")
            self.server.stdin.flush()
            return self.server.stdout.readline().strip()
        try:
            rc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                                cwd=self.dir, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                timeout=timeout).returncode
            return "survived" if rc == 0 else "killed"
        except subprocess.TimeoutExpired:
            return "timeout"

    def run(self, module: str, source: str | None, tests: list[str], timeout: float) -> tuple[str, float]:
        """Write ``source`` over ``module`` (None: leave it as it is), run the tests, restore the module.
        Returns ('survived' | 'killed' | 'timeout', seconds)."""
        target = self.dir / module
        original = target.read_text(encoding="utf-8")
        if source is not None:
            target.write_text(source, encoding="utf-8")
        t0 = time.perf_counter()
        try:
            outcome = self._pytest(tests, timeout)
        finally:
            target.write_text(original, encoding="utf-8")
        return outcome, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--module", action="append", help="charrnn/NAME.py or a path; repeatable (default: core)")
    parser.add_argument("--tests", action="append", help="test files to run instead of the module's own")
    parser.add_argument("--within", help="only mutate inside this function or class (dotted name prefix)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument("--json", type=Path, help="also write one JSON line per mutant here")
    parser.add_argument("--no-fork", dest="fork", action="store_false",
                        help="run `python -m pytest` afresh per mutant (about 7x slower; same outcomes on step.py)")
    args = parser.parse_args()

    plan = []
    for name in args.module or CORE:
        path, tests = resolve(name)
        plan.append((path, args.tests or tests, mutants(path, args.within)))
    if args.list:
        for path, tests, ms in plan:
            print(f"# {path.relative_to(ROOT)}: {len(ms)} mutants, tests {' '.join(tests)}")
            for m in ms:
                print(f"{m.module}:{m.line}  [{m.kind}]  {m.before.strip()}  →  {m.after.strip()}")
        return

    base = Path(tempfile.mkdtemp(prefix="charrnn-mutation-"))
    out = args.json.open("w") if args.json else None
    boxes: list[Sandbox] = []
    try:
        boxes.extend(Sandbox(base, args.fork) for _ in range(max(1, args.jobs)))
        summary = []
        for path, tests, ms in plan:
            rel = str(path.relative_to(ROOT))
            clean, seconds = boxes[0].run(rel, None, tests, timeout=600)
            if clean != "survived":
                print(f"# {rel}: the unmutated tests do not pass ({' '.join(tests)}); skipped", flush=True)
                continue
            timeout = 3 * seconds + 10
            print(f"# {rel}: {len(ms)} mutants, tests {' '.join(tests)} ({seconds:.1f} s unmutated)", flush=True)
            free = list(boxes)

            def one(m: Mutant, tests: list[str] = tests, timeout: float = timeout,
                    free: list[Sandbox] = free) -> tuple[Mutant, str, float]:
                box = free.pop()
                try:
                    return (m, *box.run(m.module, m.source, tests, timeout))
                finally:
                    free.append(box)

            survivors = []
            killed = 0
            with ThreadPoolExecutor(len(boxes)) as pool:
                for m, outcome, secs in pool.map(one, ms):
                    killed += outcome != "survived"
                    if outcome == "survived":
                        survivors.append(m)
                    if out:
                        out.write(json.dumps({"module": m.module, "line": m.line, "kind": m.kind,
                                              "before": m.before.strip(), "after": m.after.strip(),
                                              "outcome": outcome, "seconds": round(secs, 2)},
                                             ensure_ascii=False) + "\n")
                        out.flush()
            print(f"{rel}: killed {killed} / {len(ms)}", flush=True)
            for m in survivors:
                print(f"  survived {m.module}:{m.line}  [{m.kind}]  {m.before.strip()}  →  {m.after.strip()}",
                      flush=True)
            summary.append(f"{rel}: killed {killed} / {len(ms)} ({100 * killed / max(1, len(ms)):.0f} %)")
        print("\n".join(["# summary", *summary]))
    finally:
        for box in boxes:
            box.close()
        if out:
            out.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
