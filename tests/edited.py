"""Recording files with bytes overwritten and cut short, for tests that every reader refuses them cleanly."""

from himae_stream.recordings import RecordingError, load


def load_edited(path, raw: bytes, edits, cut: int):
    """`raw` with each (offset, bytes) of `edits` written over it and `cut` bytes cut off its end, written to
    `path` and loaded: the Recording, or None when refused with a one-line RecordingError (anything else
    propagates)."""
    raw = bytearray(raw)
    for at, data in edits:
        raw[at : at + len(data)] = data
    path.write_bytes(bytes(raw[: len(raw) - cut]))
    try:
        return load(path)
    except RecordingError as exc:
        assert "\n" not in str(exc)
        return None


def refusal(path, data: bytes) -> str:
    """The RecordingError of `data` written to `path` and loaded: one line, naming the file first."""
    path.write_bytes(data)
    try:
        load(path)
    except RecordingError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ") and "\n" not in message, message
        return message
    raise AssertionError(f"{path} was read, not refused")
