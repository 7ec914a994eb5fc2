import re


class PrunecError(Exception):
    """A user-facing error: the message is printed as one line, without a traceback."""


def one_line(exc: BaseException | str, limit: int = 800) -> str:
    """An exception's whole message on one line. Libraries put the cause last (ONNX Runtime:
    '... Model::Model(...) Unsupported model IR version: 14, max supported IR version: 13'), so a
    message too long keeps its head and its tail, never just the first characters."""
    text = exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > limit:
        head = limit // 4
        text = text[:head] + " ... " + text[-(limit - head - 5):]
    return text
