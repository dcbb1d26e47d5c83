"""Exceptions shared by the whole runtime."""


class HimaeError(Exception):
    """Base class of every error this package raises on purpose."""


class ModelFileError(HimaeError, ValueError):
    """A model file is malformed; the message names the first problem found."""
