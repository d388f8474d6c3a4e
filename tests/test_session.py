"""Session: turns continue one text (state carried, settings kept), the first turn is `generate` with the same
seed, and a turn cut short, refused or of length 0 leaves the session consistent. Then `generate --interactive`:
in-process with piped lines, and under a pseudo-terminal (Ctrl-D and Ctrl-C leave with exit 0)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

import charrnn
from charrnn.api import Model
from charrnn.cli import app
from charrnn.errors import CharRNNError
from charrnn.sample import Sampling, generate
from charrnn.session import Session
from tests.helpers import env, quick_checkpoint


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Model]:
    """lstm (the fused-cell step), mingru (the model's own forward as the step), each given a few training steps
    so that greedy text moves between characters."""
    root = tmp_path_factory.mktemp("session")
    return {cell: charrnn.load(quick_checkpoint(root, cell), device="cpu") for cell in ("lstm", "mingru")}


def greedy(model: Model, text: str, length: int) -> str:
    """The greedy continuation of ``text`` computed from scratch in one call."""
    return model.generate(text, length, greedy=True)[len(text):]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("cell", ["lstm", "mingru"])
def test_turns_continue_one_text(models: dict[str, Model], cell: str):
    model = models[cell]
    session = Session(model.network, model.vocab, Sampling(greedy=True), length=40)
    first = "".join(session.turn("the machine"))
    second = "".join(session.turn(" salt"))
    third = "".join(session.turn(""))  # an empty line continues further
    assert first == greedy(model, "the machine", 40)
    assert second == greedy(model, "the machine" + first + " salt", 40)
    assert third == greedy(model, "the machine" + first + " salt" + second, 40)
    assert len(set(first + second + third)) > 3  # the text moves: the state matters
    # A tiny model forgets within a few characters, so the texts alone would not show a state lost early on:
    # the state carried must be that of the whole text (all but the last character, still pending).
    text = model.vocab.encode("the machine" + first + " salt" + second + third).astype("int64")
    assert session._pending == [int(text[-1])]
    with torch.no_grad():
        _, whole = model.network(torch.from_numpy(text[None, :-1]))
    torch.testing.assert_close(session._state, whole, rtol=1e-4, atol=1e-5)


def test_the_first_turn_is_generate_with_the_same_seed(models: dict[str, Model]):
    model = models["lstm"]
    how = Sampling(temperature=0.9, top_k=12)
    session = model.session(300, temperature=0.9, top_k=12, seed=5)
    prefix = torch.from_numpy(model.vocab.encode("the machine").astype("int64"))
    want = [int(t) for t in generate(model.network, prefix, 300, how, torch.Generator().manual_seed(5))]
    assert "".join(session.turn("the machine")) == model.vocab.decode(want)
    session.reseed(5)
    session.reset()
    assert "".join(session.turn("the machine")) == model.vocab.decode(want)


def test_a_turn_cut_short_ends_the_text_where_it_stopped(models: dict[str, Model]):
    model = models["lstm"]
    session = Session(model.network, model.vocab, Sampling(greedy=True), length=40)
    chars = session.turn("the machine")
    shown = "".join(next(chars) for _ in range(7))
    chars.close()
    assert "".join(session.turn(" ")) == greedy(model, "the machine" + shown + " ", 40)


def test_refused_lines_and_settings_change_nothing(models: dict[str, Model]):
    model = models["lstm"]
    session = Session(model.network, model.vocab, Sampling(greedy=True), length=30)
    first = "".join(session.turn("the machine"))
    with pytest.raises(CharRNNError, match=r"the line has 1 character\(s\) the model has never seen: '€'"):
        session.turn("bread €")
    for bad in ({"temperature": 0.0}, {"top_k": 0}, {"top_p": 1.5}, {"length": -1}, {"length": 5, "top_k": 0}):
        with pytest.raises(CharRNNError):
            session.configure(**bad)
    with pytest.raises(CharRNNError, match="seed must be"):
        session.reseed(-1)
    assert (session.how, session.length) == (Sampling(greedy=True), 30)
    assert "".join(session.turn(" salt")) == greedy(model, "the machine" + first + " salt", 30)


def test_length_zero_keeps_the_text_for_the_next_turn_and_reset_forgets_it(models: dict[str, Model]):
    model = models["mingru"]
    session = Session(model.network, model.vocab, Sampling(greedy=True), length=0)
    assert list(session.turn("the ")) == []
    session.configure(length=25)
    assert "".join(session.turn("machine")) == greedy(model, "the machine", 25)
    session.reset()
    assert "".join(session.turn("salt")) == greedy(model, "salt", 25)
    session.reset()
    assert "".join(session.turn()) == greedy(model, "", 25)  # a fresh text starts after a newline


runner = CliRunner()


def interact(model: Model, lines: str, *flags: str):
    return runner.invoke(app, ["generate", "--interactive", "--checkpoint", str(model.checkpoint.path),
                               "--device", "cpu", *flags], input=lines)


def test_interactive_with_piped_lines(models: dict[str, Model]):
    model = models["lstm"]
    lines = "the machine\n/temp 0.5\n/top_k 5\n/top_p 0.9\n/length 20\n/seed 7\nbread €\n\n/bogus\n/temp 0\n" \
            "/top_k x\n/reset\n/greedy\n//\n/help\n/temp 0.7\n"
    result = interact(model, lines, "--seed", "3", "--length", "30")
    assert result.exit_code == 0, result.output
    alone = runner.invoke(app, ["generate", "--prefix", "the machine", "--seed", "3", "--length", "30",
                                "--checkpoint", str(model.checkpoint.path)])
    out = result.stdout.split("\n")
    assert out[0] == alone.stdout.removeprefix("the machine").removesuffix("\n")  # the first turn is generate's
    assert [len(line) for line in out] == [30, 20, 20, 0]  # three continuations; the last line ends the output
    assert out[2] == greedy(model, "/", 20)  # //: text starting with / (after /reset, greedy)
    err = result.stderr
    for reply in ["settings: temperature 0.5, top_k off, top_p off, length 30, seed 3",
                  "settings: temperature 0.5, top_k 5, top_p 0.9, length 20, seed 7",
                  "the line has 1 character(s) the model has never seen: '€' (U+20AC)",
                  "unknown command /bogus: /help lists the commands",
                  "/temp must be > 0, not 0.0 (use /greedy for the most likely text)",
                  "/top_k takes a whole number or off, not 'x'",
                  "fresh text: the model remembers nothing of what came before",
                  "settings: greedy, length 20, seed 7", "/reset       start a fresh text",
                  "settings: temperature 0.7, top_k 5, top_p 0.9, length 20, seed 7"]:  # /temp ends /greedy
        assert reply in err, err
    assert "Traceback" not in result.output and "Error" not in err


def test_interactive_refuses_what_it_cannot_use(models: dict[str, Model]):
    model = models["lstm"]
    for flags, message in [(["--prefix", "x"], "--interactive reads the text to continue from the terminal"),
                           (["--num-samples", "2"], "--interactive continues one text")]:
        result = interact(model, "", *flags)
        assert result.exit_code == 2 and f"Error: {message}" in result.stderr, result.output


def test_interactive_survives_undecodable_input(models: dict[str, Model]):
    result = interact(models["lstm"], b"salt \xff\n")
    assert result.exit_code == 0, result.output
    assert "the line is not valid utf-8 (byte b'\\xff'): type it again" in result.stderr
    assert "Traceback" not in result.output


class Terminal:
    """The parent's side of a pseudo-terminal: what the child wrote, read up to each expected piece in turn."""

    def __init__(self, fd: int) -> None:
        self.fd, self.seen, self.at = fd, bytearray(), 0

    def read(self, timeout: float) -> bool:
        """Read what is there within ``timeout`` seconds; False once the child has closed the terminal."""
        if not select.select([self.fd], [], [], timeout)[0]:
            return True
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # EIO: the child has gone
            return False
        self.seen += chunk
        return bool(chunk)

    def expect(self, want: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while (found := self.seen.find(want.encode(), self.at)) < 0:
            assert time.monotonic() < deadline and self.read(1), f"no {want!r} in {bytes(self.seen)!r}"
        self.at = found + len(want)

    def exit_code(self) -> str:
        """The code the TWICE script printed on leaving the command."""
        self.expect("[exit ")
        start = self.at
        self.expect("]")
        return self.seen[start : self.at - 1].decode()

    def write(self, keys: str) -> None:
        os.write(self.fd, keys.encode())


def _controlling_terminal() -> None:
    """The child's own session on the pseudo-terminal, with Ctrl-C's SIGINT as a user's shell delivers it (a test
    suite run as a background job, `pytest &`, would otherwise hand its ignored SIGINT on to the child)."""
    import fcntl
    import signal
    import termios

    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# The real command twice in one process (torch loads once): the first time left with Ctrl-D, the second with Ctrl-C.
TWICE = """
import sys
from charrnn.cli import app
for _ in range(2):
    try:
        app(args=sys.argv[1:], prog_name="charrnn")
    except SystemExit as e:
        print(f"[exit {e.code}]", flush=True)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_interactive_on_a_terminal(models: dict[str, Model]):
    """`generate --interactive` on a pseudo-terminal: prompts, continuations, a message for unseen characters;
    Ctrl-D at the prompt leaves with exit 0, and so does Ctrl-C in the middle of a long continuation."""
    master, slave = os.openpty()
    child = subprocess.Popen([sys.executable, "-c", TWICE, "generate", "--interactive", "--device", "cpu",
                              "--checkpoint", str(models["lstm"].checkpoint.path), "--length", "20", "--seed", "1"],
                             stdin=slave, stdout=slave, stderr=slave, env=env(), preexec_fn=_controlling_terminal)
    os.close(slave)
    term = Terminal(master)
    try:
        term.expect("> ")
        term.write("the machine\r")
        term.expect("> ")
        term.write("bread €\r")
        term.expect("the line has 1 character(s) the model has never seen: '€'")
        term.expect("> ")
        term.write("\x04")  # Ctrl-D
        assert term.exit_code() == "0"
        term.expect("> ")
        term.write("/length 100000000\r")
        term.expect("length 100000000")
        term.write("salt\r")
        term.expect("salt\r\n")
        time.sleep(0.5)  # well into the continuation
        term.write("\x03")  # Ctrl-C
        assert term.exit_code() == "0"
        code = child.wait(timeout=60)
        while term.read(0.2) and child.poll() is None:
            pass
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
        os.close(master)
    text = term.seen.decode("utf-8", "replace")
    assert code == 0, text
    assert "Traceback" not in text and "Error" not in text and "Interrupted" not in text, text
