"""The exception types the CLI turns into a one-line message and a non-zero exit."""


class UserError(ValueError):
    """Bad input from the user: the message names the problem and the fix."""

    exit_code = 2


class RunError(UserError):
    """Not the input's fault: the work could not go on (a job's process killed by the system);
    the message says what is kept and how to go on."""

    exit_code = 1


class InputError(UserError):
    """An input file is missing, empty, or lacks the columns or values a command needs."""

    exit_code = 3


class LossNotFinite(UserError):
    """The run diverged: its training loss became nan or inf or grew DIVERGED_FACTOR times its
    first, or its evaluated outputs are not finite. The run stops, its last finished epoch's
    checkpoint is kept, no result is written. ``what``: how it diverged, without the advice."""

    exit_code = 3

    def __init__(self, message: str, what: str | None = None) -> None:
        super().__init__(message)
        self.what = what or message


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none): what a
    one-line error quotes of a library's own exception."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
