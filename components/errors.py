"""The one error type the CLI turns into a one-line message instead of a traceback."""


class SvpError(Exception):
    """A user-facing failure: bad input, a bad param, a missing tool. Its message is one line
    that names the file or setting at fault."""
