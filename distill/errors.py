"""User-facing errors: one line that names the problem and the fix."""


class UserError(Exception):
    """A mistake the user can fix (bad config, missing data, unreachable weights).

    The CLI prints ``error: <message>`` and exits with status 2, without a traceback.
    """


def one_line(exc: BaseException) -> str:
    """The user-facing line of an error, also when a DataLoader worker re-raised it.

    DataLoader wraps worker exceptions as ``Caught X in DataLoader worker...`` followed by the
    whole traceback; the last line carries the original message.
    """
    text = str(exc).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text
