"""Reading and writing HiMAE model files (docs/model-format.md, version 1).

Numpy and the C core only, so the runtime can load models without torch.
`read` and `decode` validate through the C loader's own checks
(`himae_stream._core.parse_model_file`, csrc/modelfile.c): the C loader is
the one authority, so both readers accept and refuse exactly the same files
with the same messages. Like the C loader, they read subnormal weights as
zeros (`flush_subnormals`).
"""

from __future__ import annotations

import json
import os
import stat
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from himae_stream.errors import ModelFileError, in_file
from himae_stream.normalize import validate_spec

MAGIC = b"HIMAEMDL"
FOOTER_MAGIC = b"HEND"
VERSION = 1
HEADER_SIZE = 256
FOOTER_SIZE = 8
ENTRY_SIZE = 96
ALIGN = 64
MAX_LEVELS = 8
DTYPE_F32 = 1
FLAG_DECODER = 1

# Header layout: (name, struct format, offset); `channels` is 8 × u32 at 104.
HEADER_FIELDS = {
    "version": ("<I", 8),
    "header_size": ("<I", 12),
    "file_size": ("<Q", 16),
    "meta_offset": ("<Q", 24),
    "meta_size": ("<Q", 32),
    "table_offset": ("<Q", 40),
    "data_offset": ("<Q", 48),
    "tensor_count": ("<I", 56),
    "table_crc32": ("<I", 60),
    "meta_crc32": ("<I", 64),
    "in_channels": ("<I", 68),
    "window": ("<I", 72),
    "n_levels": ("<I", 76),
    "kernel_size": ("<I", 80),
    "stride": ("<I", 84),
    "fs": ("<f", 88),
    "patch_size": ("<I", 92),
    "mask_ratio": ("<f", 96),
    "flags": ("<I", 100),
}
CHANNELS_OFFSET = 104
HEADER_CRC_OFFSET = 252
# Tensor table entry: name[48], dtype, ndim, dims[4], offset, nbytes, crc32, reserved.
ENTRY_FORMAT = "<48sII4IQQII"
#: The largest model file the readers take (csrc/modelfile.h HIMAE_MAX_FILE): a file is read whole.
MAX_FILE_SIZE = 1 << 30


@dataclass
class ModelFile:
    """A validated model file: configuration, whole metadata, float32 tensors by name.

    `memory` is what loading it into the C core takes with this CPU's best
    kernels, in bytes: packed `weights` and activation `buffers` (the part
    `load_model(..., max_memory=)` bounds).
    """

    config: dict
    meta: dict
    tensors: dict[str, np.ndarray] = field(repr=False)
    memory: dict = field(default_factory=dict)


def expected_tensors(config: dict, with_decoder: bool = True) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes a configuration needs, in file order."""
    chans = list(config["channels"])
    k, c_in = config["kernel_size"], config["in_channels"]
    shapes: dict[str, tuple[int, ...]] = {}
    prev = c_in
    for level, c in enumerate(chans):
        for conv, w_shape in (("conv1", (c, prev, k)), ("conv2", (c, c, k)), ("skip", (c, prev, 1))):
            shapes[f"encoder.{level}.{conv}.weight"] = w_shape
            shapes[f"encoder.{level}.{conv}.bias"] = (c,)
        prev = c
    if with_decoder:
        for t in reversed(range(len(chans) - 1)):
            c = chans[t]
            for conv, w_shape in (("up", (chans[t + 1], c, k)), ("conv1", (c, 2 * c, k)), ("conv2", (c, c, k))):
                shapes[f"decoder.{t}.{conv}.weight"] = w_shape
                shapes[f"decoder.{t}.{conv}.bias"] = (c,)
        shapes["head.weight"] = (chans[0], c_in, k)
        shapes["head.bias"] = (c_in,)
    return shapes


def flush_subnormals(a: np.ndarray) -> np.ndarray:
    """A float32 copy of `a` with every subnormal (0 < |x| < 2^-126) replaced by a zero of its sign.

    What the C loader packs (csrc/fpmode.h) and the exporter writes: a
    subnormal weight is far below any output's rounding error, but each one
    the GEMM reads costs an Intel core a microcode assist.
    """
    bits = np.array(a, dtype=np.float32).view(np.uint32)
    subnormal = (bits & 0x7F800000) == 0
    bits[subnormal] &= 0x80000000
    return bits.view(np.float32)


def _f32(value: float) -> float:
    """The shortest decimal that names the same binary32 value (0.8, not 0.800000011920929)."""
    return float(str(np.float32(value)))


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


# ---------------------------------------------------------------- writing


def write(path, config: dict, tensors: dict[str, np.ndarray], meta: dict | None = None) -> None:
    """Write a model file: header from `config`, metadata JSON, tensors in spec order.

    `config` holds name, fs, window, in_channels, channel_names, channels,
    kernel_size, stride, patch_size, mask_ratio, normalizer and optionally
    decoder (default True). `meta` adds keys such as provenance, probes, card.
    """
    Path(path).write_bytes(encode(config, tensors, meta))


def encode(config: dict, tensors: dict[str, np.ndarray], meta: dict | None = None) -> bytes:
    """The bytes `write` stores."""
    with_decoder = bool(config.get("decoder", True))
    shapes = expected_tensors(config, with_decoder)
    if set(tensors) != set(shapes):
        missing, extra = sorted(set(shapes) - set(tensors)), sorted(set(tensors) - set(shapes))
        raise ValueError(f"tensors do not match the configuration (missing {missing}, unexpected {extra})")
    arrays = {}
    for name, shape in shapes.items():
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        if a.shape != shape:
            raise ValueError(f"tensor {name!r} has shape {list(a.shape)}, configuration needs {list(shape)}")
        if not np.isfinite(a).all():
            raise ValueError(f"tensor {name!r} contains NaN or Inf")
        arrays[name] = a
    if len(config["channel_names"]) != config["in_channels"]:
        raise ValueError(f"{config['in_channels']} input channels but channel_names {config['channel_names']}")
    if len(config["channels"]) > MAX_LEVELS:
        raise ValueError(f"at most {MAX_LEVELS} levels, got {len(config['channels'])}")
    metadata = {
        "name": config["name"],
        "channel_names": list(config["channel_names"]),
        "normalizer": validate_spec(config["normalizer"]),
        "provenance": {},
        **(meta or {}),
    }
    buf = assemble(config, arrays, json.dumps(metadata, indent=1, sort_keys=False).encode("utf-8"))
    from himae_stream._core import parse_model_file

    try:  # never write what the loader refuses (e.g. metadata past its JSON limits)
        parse_model_file(buf)
    except ModelFileError as exc:
        raise ValueError(f"the model file would not load: {exc}") from None
    return buf


def assemble(config: dict, arrays: dict[str, np.ndarray], meta_bytes: bytes) -> bytes:
    """Lay out a model file from its configuration, float32 arrays (in file order) and metadata text, unchecked.

    `encode` checks what it is given first; tests and the fuzzers' seeds use
    this directly to build files the loader must refuse.
    """
    with_decoder = bool(config.get("decoder", True))
    meta_offset = HEADER_SIZE
    table_offset = _align(meta_offset + len(meta_bytes))
    data_offset = _align(table_offset + ENTRY_SIZE * len(arrays))
    table = bytearray()
    blobs = []
    offset = data_offset
    for name, a in arrays.items():
        raw = a.tobytes()
        dims = list(a.shape) + [0] * (4 - a.ndim)
        table += struct.pack(
            ENTRY_FORMAT, name.encode("ascii"), DTYPE_F32, a.ndim, *dims, offset, len(raw), zlib.crc32(raw), 0
        )
        blobs.append((offset, raw))
        offset = _align(offset + len(raw))
    end_of_data = blobs[-1][0] + len(blobs[-1][1])
    file_size = end_of_data + FOOTER_SIZE

    buf = bytearray(file_size)
    values = {
        "version": VERSION,
        "header_size": HEADER_SIZE,
        "file_size": file_size,
        "meta_offset": meta_offset,
        "meta_size": len(meta_bytes),
        "table_offset": table_offset,
        "data_offset": data_offset,
        "tensor_count": len(arrays),
        "table_crc32": zlib.crc32(bytes(table)),
        "meta_crc32": zlib.crc32(meta_bytes),
        "in_channels": config["in_channels"],
        "window": config["window"],
        "n_levels": len(config["channels"]),
        "kernel_size": config["kernel_size"],
        "stride": config["stride"],
        "fs": config["fs"],
        "patch_size": config["patch_size"],
        "mask_ratio": config["mask_ratio"],
        "flags": FLAG_DECODER if with_decoder else 0,
    }
    buf[0:8] = MAGIC
    for name, (fmt, off) in HEADER_FIELDS.items():
        struct.pack_into(fmt, buf, off, values[name])
    struct.pack_into("<8I", buf, CHANNELS_OFFSET, *config["channels"], *[0] * (MAX_LEVELS - len(config["channels"])))
    struct.pack_into("<I", buf, HEADER_CRC_OFFSET, zlib.crc32(bytes(buf[:HEADER_CRC_OFFSET])))
    buf[meta_offset : meta_offset + len(meta_bytes)] = meta_bytes
    buf[table_offset : table_offset + len(table)] = table
    for off, raw in blobs:
        buf[off : off + len(raw)] = raw
    struct.pack_into("<I4s", buf, file_size - FOOTER_SIZE, zlib.crc32(bytes(buf[: file_size - FOOTER_SIZE])), FOOTER_MAGIC)
    return bytes(buf)


# ---------------------------------------------------------------- reading


def read(path) -> ModelFile:
    """Read and fully validate a model file; raise ModelFileError naming the file and its first problem.

    Only a regular file of at most MAX_FILE_SIZE bytes is read (a device or
    FIFO would never end); a missing or unreadable one raises OSError.
    """
    try:
        return decode(read_capped(path))
    except ModelFileError as exc:
        raise ModelFileError(in_file(str(exc), path)) from None


def read_capped(path) -> bytes:
    """The bytes of the regular file `path`, at most MAX_FILE_SIZE of them; ModelFileError (without the path) if
    it is not a regular file or is larger. Opened non-blocking, so a FIFO without a writer does not hang."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ModelFileError("not a regular file")
        if info.st_size > MAX_FILE_SIZE:
            raise ModelFileError(f"too large: file has {info.st_size} bytes, more than the {MAX_FILE_SIZE}-byte maximum")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_FILE_SIZE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_SIZE:
        raise ModelFileError(f"too large: file has more than the {MAX_FILE_SIZE}-byte maximum")
    return data


def decode(buf: bytes) -> ModelFile:
    """Validate model file bytes with the C loader's checks (docs/model-format.md, in order)."""
    from himae_stream._core import parse_model_file  # the C core imports this package's errors

    buf = bytes(buf)
    parsed = parse_model_file(buf)
    start = parsed["meta_offset"]
    # The C check admits only JSON that json.loads reads (depth and number-length limits).
    meta = json.loads(buf[start : start + parsed["meta_size"]].decode("utf-8"))
    config = {
        "name": meta["name"],
        **parsed["header_config"],
        "channel_names": list(meta["channel_names"]),
        "normalizer": validate_spec(meta["normalizer"]),
    }
    config = {key: config[key] for key in ("name", "fs", "window", "in_channels", "channel_names", "channels",
                                            "kernel_size", "stride", "patch_size", "mask_ratio", "normalizer",
                                            "decoder")}
    tensors = {
        name: flush_subnormals(np.frombuffer(buf, dtype="<f4", count=nbytes // 4, offset=offset)).reshape(shape)
        for name, offset, nbytes, shape in parsed["tensors"]
    }
    return ModelFile(config=config, meta=meta, tensors=tensors, memory=parsed["memory"])
