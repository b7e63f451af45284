"""The one error type the CLI turns into a one-line message instead of a traceback."""

# Exit status of `svp` for an SvpError: bad input or a bad param, so retrying cannot help.
# (Unexpected crashes exit 1, usage errors 2.) The pipeline flow retries a stage on any other.
BAD_INPUT_EXIT_CODE = 3
# Exit status for a service that does not answer (`components.services`): retrying may help.
SERVICE_EXIT_CODE = 4


class SvpError(Exception):
    """A user-facing failure: bad input, a bad param, a missing tool. Its message is one line
    that names the file or setting at fault."""
