"""The one user-facing error type. Anything else escaping the library is a bug."""


class CharRNNError(Exception):
    """A mistake the user can fix: the message says what went wrong and what to do next.

    ``exit_code`` is what the command line exits with (2 = bad usage or bad input).
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Damaged(CharRNNError):
    """A file whose content does not fit what charrnn wrote (damaged, hand-edited, or another version's)."""
