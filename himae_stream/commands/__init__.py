"""Subcommands of the `himae` entry point, one module each, and the options they share."""

from __future__ import annotations

import argparse

from himae_stream.numbers import OptionError


def add_precision_argument(p: argparse.ArgumentParser) -> None:
    """`--precision`, for the commands that load a model to run it (`load_model(..., precision=)`)."""
    p.add_argument("--precision", choices=("f32", "bf16", "bf16dot", "int8"), default="f32",
                   help="weights as stored (f32); rounded to bfloat16 at load (bf16: half the bytes a push reads); "
                        "weights and inputs in bfloat16 dot products with f32 sums (bf16dot: about 1.7x as fast, "
                        "needs AVX512-BF16 or ARM BF16); or the encoder's weights and inputs in int8 with exact int32 "
                        "sums (int8: needs AVX2, AVX512-VNNI or ARM DotProd); accuracy bounds in docs/stream-mode.md (default f32)")


#: prefix of the dest of a positional argument that stands for an option (see add_positional)
_POSITIONAL = "positional_"


def add_positional(parser: argparse.ArgumentParser, option: str) -> None:
    """Let `option`'s value also come without its name (`himae run rec.csv` for `himae run --source rec.csv`),
    the way a newcomer types it first; take_positionals() moves it to the option's dest, refusing both at once."""
    name = option.removeprefix("--")
    parser.add_argument(_POSITIONAL + name.replace("-", "_"), nargs="?", metavar=name.upper(),
                        help=f"the same as {option} {name.upper()}")


def take_positionals(args: argparse.Namespace) -> None:
    """Each add_positional value into its option's dest (OptionError when both are given)."""
    for key in [key for key in vars(args) if key.startswith(_POSITIONAL)]:
        value, dest = getattr(args, key), key.removeprefix(_POSITIONAL)
        delattr(args, key)
        if value is None:
            continue
        option = "--" + dest.replace("_", "-")
        if getattr(args, dest) is not None:
            raise OptionError(f"{dest.upper()} given twice, as {value!r} and {option} "
                              f"{getattr(args, dest)!r}: give it once")
        setattr(args, dest, value)
