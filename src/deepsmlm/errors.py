"""The one exception type for expected, user-facing errors (bad files, bad values).

The CLI prints its message on one line and exits with status 2; anything else is a bug.
"""


class UserError(Exception):
    """An error in the user's input: a file, a value, a shape. Message names the problem."""
