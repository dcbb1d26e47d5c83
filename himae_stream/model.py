"""Loading a model file into the C core.

`load_model(path)` returns a `Model` (himae_stream._core): `config`, `isa`,
`encode(x)`, `embed(x)`, `reconstruct(x)`. One Model per thread.
"""

from __future__ import annotations

import os

from himae_stream._core import Model, alloc_count, supported_isas

__all__ = ["Model", "alloc_count", "load_model", "supported_isas"]


def load_model(path: str | os.PathLike, isa: str | None = None) -> Model:
    """Load and validate a model file, or a shipped model by name ("himae-100", "himae-25");
    isa forces a micro-kernel ISA (default: best)."""
    from himae_stream.zoo import resolve

    return Model(str(resolve(path)), isa)
