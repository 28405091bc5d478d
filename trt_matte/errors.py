"""The one exception type the command line turns into a one-line message, and the lines
it prints when interrupted."""


class MatteError(Exception):
    """A failure the user can act on: bad input, missing model, unusable device."""

# What the command line prints when Ctrl-C or SIGTERM ends a run.
INTERRUPTED_LINE = "trt-matte: interrupted; no output was left behind"
# ... when outputs were already complete (earlier files of a batch, or a run that had
# just finished): those stay.
KEPT_LINE = "trt-matte: interrupted; outputs finished before it were kept, nothing partial was left behind"
