"""Stop strings (stop.py) and every front end that takes them: the cut is at the first occurrence of any stop
string, which is left out, and feeding the text in any pieces gives what feeding it whole gives (a possible start
of a stop string is held back across pieces)."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import charrnn
from charrnn.cli import app
from charrnn.errors import CharRNNError
from charrnn.stop import MAX_STOP_CHARS, MAX_STOPS, StopMatcher, check_stops, cut_at_stop, unescape
from tests.helpers import random_checkpoint, synthetic_text


def naive_cut(text: str, stops: list[str]) -> tuple[str, bool]:
    """Grow the text a character at a time; stop at the first point where it ends with a stop string."""
    for end in range(len(text) + 1):
        done = [s for s in stops if text[:end].endswith(s)]
        if done:
            return text[:end - max(map(len, done))], True
    return text, False


def fed_in_pieces(text: str, stops: list[str], cuts: list[int]) -> tuple[str, bool]:
    matcher, shown, bounds = StopMatcher(stops), [], sorted({0, len(text), *(c for c in cuts if c < len(text))})
    for start, end in zip(bounds, bounds[1:], strict=False):
        piece, stopped = matcher.feed(text[start:end])
        shown.append(piece)
        if stopped:
            return "".join(shown), True
    return "".join(shown) + matcher.flush(), False


def test_the_first_stop_string_ends_the_text_and_is_left_out():
    assert cut_at_stop("hello\n\nworld\n\n", ["\n\n"]) == ("hello", True)
    assert cut_at_stop("hello world", ["\n\n"]) == ("hello world", False)
    assert cut_at_stop("abcdef", ["de", "bc"]) == ("a", True)  # the earliest occurrence, whichever string it is
    assert cut_at_stop("xaby", ["aby", "b"]) == ("xa", True)  # the first completed: "b" ends before "aby" does
    assert cut_at_stop("xaby", ["aby", "by"]) == ("x", True)  # completed together: the longer one
    assert cut_at_stop("aab", ["ab"]) == ("a", True)
    assert cut_at_stop("stop", ["stop"]) == ("", True)
    assert cut_at_stop("anything", []) == ("anything", False)


def test_a_possible_start_is_held_back_until_the_next_piece_settles_it():
    matcher = StopMatcher(["\n\n", "END"])
    assert matcher.feed("one\n") == ("one", False)
    assert matcher.feed("two E") == ("\ntwo ", False)
    assert matcher.feed("N") == ("", False)
    assert matcher.feed("Oless\n") == ("ENOless", False)
    assert matcher.feed("\nthree") == ("", True)
    assert matcher.feed("more") == ("", True)  # nothing after the stop
    ending = StopMatcher(["END"])
    assert ending.feed("the EN") == ("the ", False)
    assert ending.flush() == "EN"  # the text ended before the stop string did


@settings(max_examples=60)
@given(text=st.text(alphabet="ab\n", max_size=30),
       stops=st.lists(st.text(alphabet="ab\n", min_size=1, max_size=4), max_size=3),
       cuts=st.lists(st.integers(0, 30), max_size=8))
def test_any_pieces_give_what_the_whole_text_gives(text: str, stops: list[str], cuts: list[int]):
    expected = naive_cut(text, stops)
    assert fed_in_pieces(text, stops, cuts) == expected
    assert fed_in_pieces(text, stops, list(range(len(text)))) == expected  # one character at a time


@pytest.mark.parametrize("stops, message", [
    ([""], "a stop string must be non-empty text, not ''"),
    (["x"] * (MAX_STOPS + 1), f"at most {MAX_STOPS} stop strings can be given, not {MAX_STOPS + 1}"),
    (["x" * (MAX_STOP_CHARS + 1)], f"at most {MAX_STOP_CHARS} characters long, not {MAX_STOP_CHARS + 1}"),
])
def test_bad_stop_strings_are_errors(stops: list[str], message: str):
    with pytest.raises(CharRNNError, match=message):
        check_stops(stops)


def test_command_line_escapes():
    assert unescape(r"\n\n") == "\n\n"
    assert unescape(r"a\tb\\n") == "a\tb\\n"
    assert unescape(r"\x\\") == "\\x\\"


TEXT = synthetic_text(500)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("stop"), TEXT)


def test_model_generate_stops_where_the_text_first_has_a_stop_string(ckpt: Path):
    model = charrnn.load(ckpt, device="cpu")
    whole = model.generate("the ", 300, seed=3)
    stop = whole[10:12]  # two characters the continuation is known to hold
    cut, stopped = cut_at_stop(whole[4:], [stop])
    assert stopped and model.generate("the ", 300, seed=3, stop=[stop]) == "the " + cut


def test_generate_stop_flag(ckpt: Path):
    runner = CliRunner()

    def generate(*flags: str) -> str:
        result = runner.invoke(app, ["generate", "--checkpoint", str(ckpt), "--prefix", "the ", "--length", "200",
                                     "--seed", "5", *flags])
        assert result.exit_code == 0, result.output
        return result.stdout

    whole = generate()
    stop = whole[20:22]
    assert generate("--stop", stop, "--stop", "\u00e9zz") == "the " + cut_at_stop(whole[4:-1], [stop])[0] + "\n"
    samples = generate("--num-samples", "3")
    cut = generate("--num-samples", "3", "--stop", r"\n").removesuffix("\n").split("\n\n")  # no newline inside
    assert len(cut) == 3 and all(c.startswith("the ") and c + "\n" in samples for c in cut)
    bad = runner.invoke(app, ["generate", "--checkpoint", str(ckpt), "--stop", ""])
    assert bad.exit_code == 2 and "Error: a --stop string must be non-empty text, not ''" in bad.stderr
    bad = runner.invoke(app, ["generate", "--checkpoint", str(ckpt), *["--stop", "x"] * 17])
    assert bad.exit_code == 2 and "Error: at most 16 --stop strings can be given, not 17" in bad.stderr
    bad = runner.invoke(app, ["generate", "--checkpoint", str(ckpt), "--interactive", "--stop", "x"])
    assert bad.exit_code == 2 and "Error: --stop does not work with --interactive yet: leave it out" in bad.stderr
