"""The one exception type reasonlens raises for bad input: its message names the problem and the fix."""


class ReasonlensError(ValueError):
    """Bad input to a reasonlens function (unknown names, out-of-range values, mismatched prompts, ...)."""
