"""Subcommands of the `himae` entry point, one module each, and the options they share."""

from __future__ import annotations

import argparse


def add_precision_argument(p: argparse.ArgumentParser) -> None:
    """`--precision`, for the commands that load a model to run it (`load_model(..., precision=)`)."""
    p.add_argument("--precision", choices=("f32", "bf16", "bf16dot", "int8"), default="f32",
                   help="weights as stored (f32); rounded to bfloat16 at load (bf16: half the bytes a push reads); "
                        "weights and inputs in bfloat16 dot products with f32 sums (bf16dot: about 1.7x as fast, "
                        "needs AVX512-BF16 or ARM BF16); or the encoder's weights and inputs in int8 with exact int32 "
                        "sums (int8: needs AVX2, AVX512-VNNI or ARM DotProd); accuracy bounds in docs/stream-mode.md (default f32)")
