"""What the two model-file readers say about one file, for tests that check they agree."""

from himae_stream import load_model, modelfile
from himae_stream.errors import ModelFileError


def outcomes_of(path) -> tuple[str | None, str | None]:
    """(C loader, Python reader) on one file: None when accepted, else the message; anything but a
    ModelFileError propagates."""
    said = []
    for load in (load_model, modelfile.read):
        try:
            load(path)
            said.append(None)
        except ModelFileError as exc:
            said.append(str(exc))
    return said[0], said[1]
