"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class UserError(ValueError):
    """Bad input from the user: the message names the problem and the fix."""

    exit_code = 2


class InputError(UserError):
    """An input file is missing, empty, or lacks the columns or values a command needs."""

    exit_code = 3
