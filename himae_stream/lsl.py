"""The one place pylsl (Python bindings of liblsl, the Lab Streaming Layer library) is imported.

Both the `lsl://` source and the `lsl://` sink load it through `load_pylsl`,
on first use only, so a missing or broken install is the same one-line error
for either, raised as the caller's own error class.
"""

from __future__ import annotations

#: pull_chunk(min_samples=...) (read what is there once one sample arrived) is new in 1.18
REQUIREMENT = "pylsl>=1.18"


def load_pylsl(error: type[Exception]):
    """The pylsl module; `error` with one line saying what to install when it (or liblsl) cannot be loaded."""
    try:
        import pylsl
        import pylsl.util  # its errors (TimeoutError, LostError) live there
    except (ImportError, RuntimeError, OSError) as exc:
        raise error(f"lsl:// needs pylsl and the liblsl library (pip install '{REQUIREMENT}'): {exc}") from None
    return pylsl
