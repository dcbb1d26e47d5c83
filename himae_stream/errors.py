"""Exceptions shared by the whole runtime."""

import os

#: The one model-file refusal after which the C loader adds detail (what is wrong with the JSON, and where).
META_REFUSED = "metadata is not a JSON object"


class HimaeError(Exception):
    """Base class of every error this package raises on purpose."""


class ModelFileError(HimaeError, ValueError):
    """A model file is malformed, or too large to read or load; the message names the first problem found."""


class StreamStateError(HimaeError, ValueError):
    """A stream snapshot is corrupt, inconsistent or belongs to another model; nothing was restored from it."""


def in_file(message: str, path) -> str:
    """A model-file refusal `message` naming the file: "(in PATH)" right after the reason.

    Detail after "metadata is not a JSON object" (what is wrong with the
    JSON) goes after the path, so every message starts with the spec's text
    and the file it is about.
    """
    reason = META_REFUSED if message.startswith(META_REFUSED) else message
    return f"{reason} (in {os.fspath(path)}){message[len(reason):]}"
