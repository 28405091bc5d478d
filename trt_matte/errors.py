"""The one exception type the command line turns into a one-line message."""


class MatteError(Exception):
    """A failure the user can act on: bad input, missing model, unusable device."""
