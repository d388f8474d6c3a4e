"""The one user-facing error type (anything else escaping the library is a bug), and paths as messages show them."""


class CharRNNError(Exception):
    """A mistake the user can fix: the message says what went wrong and what to do next.

    ``exit_code`` is what the command line exits with (2 = bad usage or bad input).
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Damaged(CharRNNError):
    """A file whose content does not fit what charrnn wrote (damaged, hand-edited, or another version's)."""


def printable(path: object) -> str:
    """A path as text that any UTF-8 output can show (a file name that is not UTF-8 gets U+FFFD)."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
