class PrunecError(Exception):
    """A user-facing error: the message is printed as one line, without a traceback."""
