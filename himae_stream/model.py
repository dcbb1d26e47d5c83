"""Loading a model file into the C core.

`load_model(path)` returns a `Model` (himae_stream._core): `config`, `isa`, `precision`,
`encode(x)`, `embed(x)`, `reconstruct(x)`. One Model per thread.
"""

from __future__ import annotations

import os

from himae_stream._core import DEFAULT_MAX_MEMORY, Model, alloc_count, supported_isas, supported_precisions

__all__ = ["DEFAULT_MAX_MEMORY", "Model", "alloc_count", "load_model", "supported_isas", "supported_precisions"]


def load_model(path: str | os.PathLike, isa: str | None = None, max_memory: int | None = None,
               precision: str | None = None) -> Model:
    """Load and validate a model file, or a shipped model by name ("himae-100", "himae-25").

    isa forces a micro-kernel ISA (default: best). max_memory (bytes, default
    DEFAULT_MAX_MEMORY = 256 MiB) bounds the activation buffers the model
    needs: a file that declares more (a huge window or channel count) is
    refused with ModelFileError before they are allocated; pass a larger
    value to load it anyway (docs/model-format.md, "Memory"). precision
    "bf16" rounds the weights to bfloat16 at load (half the bytes a push
    reads; activations and sums stay f32); "bf16dot" also rounds each
    convolution's inputs and multiplies them in pairs with f32 sums, about
    1.7 times as fast where the CPU has AVX512-BF16 or ARM BF16 (elsewhere
    only with isa="scalar", slowly; `supported_precisions()` lists what this
    CPU runs); "int8" rounds the encoder's weights (a scale per output
    channel) and each convolution input row (a scale per row, 7 bits) to
    integers and sums their products exactly, where the CPU has AVX2,
    AVX512-VNNI or ARM DotProd (the decoder
    stays f32); accuracy bounds in docs/stream-mode.md, "Reduced precision";
    default "f32".
    """
    from himae_stream.zoo import resolve

    return Model(str(resolve(path)), isa, max_memory, precision)
