"""The one exception type that means "the user can fix this".

Library code raises CharnnError with a one-line message that says what happened and what to do;
the CLI turns it into a clean error line and a non-zero exit (never a traceback). Anything else
that escapes is a bug in charnn.
"""


class CharnnError(Exception):
    """A problem with the user's input, files or settings, described in one line."""
