"""Where numba keeps what it compiles for this package: the user's cache folder.

numba's default cache sits in `__pycache__` beside the source, i.e. inside
the installed package. Files written there outlive an uninstall, and a
package folder left holding only them is imported as an empty namespace
package ahead of a later editable install (every `himae` call then fails).
So the package never writes into itself: compiled code goes to
`$XDG_CACHE_HOME/himae-stream/numba` (`~/.cache/...`), or to a per-user
folder under the temporary directory where that cannot be written. A
`NUMBA_CACHE_DIR` the user set is left as it is.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numba


def user_cache_dir() -> Path:
    """The cache folder for this user, by the XDG rule."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "himae-stream" / "numba"


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def use_user_cache() -> str:
    """Point numba's cache at the user's cache folder unless the user chose one; return the folder.

    Must run before a `cache=True` function is decorated: numba picks the
    cache location when it wraps the function.
    """
    if not numba.config.CACHE_DIR:
        path = user_cache_dir()
        if not _writable(path):
            path = Path(tempfile.gettempdir()) / f"himae-stream-numba-{os.getuid()}"
            path.mkdir(mode=0o700, exist_ok=True)
        numba.config.CACHE_DIR = str(path)
    return numba.config.CACHE_DIR
