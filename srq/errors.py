"""User-facing errors: raised anywhere, printed by the CLI as one line, exit code 2."""


class SrqError(Exception):
    """A problem with the user's input (file, argument, data) that the user can fix.

    The message must name the offending file or argument and the cause.
    """


class GateFailure(Exception):
    """A release gate failed (exit code 1); ``lines`` holds one line per failed gate."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines
