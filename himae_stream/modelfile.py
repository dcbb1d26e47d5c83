"""Reading and writing HiMAE model files (docs/model-format.md, version 1).

Numpy only, so the runtime can load models without torch. `read` applies the
spec's checks in the spec's order and raises `ModelFileError` with the spec's
message for the first failure; it accepts and refuses exactly what the C
loader does. Every field is bounds-checked before it is used, so no input
makes it read past the end of the file. Like the C loader, it reads
subnormal weights as zeros (`flush_subnormals`).
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from himae_stream.errors import ModelFileError
from himae_stream.normalize import validate_spec

MAGIC = b"HIMAEMDL"
FOOTER_MAGIC = b"HEND"
VERSION = 1
HEADER_SIZE = 256
FOOTER_SIZE = 8
ENTRY_SIZE = 96
NAME_SIZE = 48
ALIGN = 64
MIN_FILE_SIZE = HEADER_SIZE + FOOTER_SIZE
MAX_META_SIZE = 1 << 20
MAX_TENSORS = 1024
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
RESERVED_RANGE = (136, 252)
HEADER_CRC_OFFSET = 252
# Tensor table entry: name[48], dtype, ndim, dims[4], offset, nbytes, crc32, reserved.
ENTRY_FORMAT = "<48sII4IQQII"
# The one refusal after which this reader says more than the C loader (the JSON error).
META_REFUSED = "metadata is not a JSON object"


@dataclass
class ModelFile:
    """A validated model file: configuration, whole metadata, float32 tensors by name."""

    config: dict
    meta: dict
    tensors: dict[str, np.ndarray] = field(repr=False)


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
    meta_bytes = json.dumps(metadata, indent=1, sort_keys=False).encode("utf-8")

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
    """Read and fully validate a model file; raise ModelFileError naming the file and its first problem."""
    try:
        return decode(Path(path).read_bytes())
    except ModelFileError as exc:
        raise ModelFileError(in_file(str(exc), path)) from None


def in_file(message: str, path) -> str:
    """A refusal `message` naming the file: "(in PATH)" after the reason both readers give.

    Detail only this reader adds (the JSON error after "metadata is not a
    JSON object") goes after the path, so the C loader's message, named the
    same way, stays a prefix of this reader's.
    """
    reason = META_REFUSED if message.startswith(META_REFUSED) else message
    return f"{reason} (in {os.fspath(path)}){message[len(reason):]}"


def decode(buf: bytes) -> ModelFile:
    """Validate model file bytes (the checks of docs/model-format.md, in order)."""
    n = len(buf)
    if n < MIN_FILE_SIZE:
        raise ModelFileError(f"truncated: file has {n} bytes, less than the {MIN_FILE_SIZE}-byte minimum")
    if buf[:8] != MAGIC:
        raise ModelFileError("bad magic: not a HiMAE model file")
    h = {name: struct.unpack_from(fmt, buf, off)[0] for name, (fmt, off) in HEADER_FIELDS.items()}
    if h["version"] != VERSION:
        raise ModelFileError(f"unsupported format version {h['version']} (this reader supports {VERSION})")
    if struct.unpack_from("<I", buf, HEADER_CRC_OFFSET)[0] != zlib.crc32(buf[:HEADER_CRC_OFFSET]):
        raise ModelFileError("header checksum mismatch")
    if h["file_size"] > n:
        raise ModelFileError(f"truncated: header says {h['file_size']} bytes, file has {n}")
    if h["file_size"] < n:
        raise ModelFileError(f"trailing data: header says {h['file_size']} bytes, file has {n}")
    if buf[n - 4 :] != FOOTER_MAGIC:
        raise ModelFileError("bad footer")
    channels = list(struct.unpack_from("<8I", buf, CHANNELS_OFFSET))
    _check_configuration(h, channels, buf)
    n_levels = h["n_levels"]
    with_decoder = bool(h["flags"] & FLAG_DECODER)
    _check_sections(h, n)

    meta_bytes = buf[h["meta_offset"] : h["meta_offset"] + h["meta_size"]]
    if zlib.crc32(meta_bytes) != h["meta_crc32"]:
        raise ModelFileError("metadata checksum mismatch")
    meta = _parse_meta(meta_bytes, h["in_channels"])

    table_bytes = buf[h["table_offset"] : h["table_offset"] + ENTRY_SIZE * h["tensor_count"]]
    if zlib.crc32(table_bytes) != h["table_crc32"]:
        raise ModelFileError("tensor table checksum mismatch")
    config = {
        "name": meta["name"],
        "fs": _f32(h["fs"]),
        "window": h["window"],
        "in_channels": h["in_channels"],
        "channel_names": list(meta["channel_names"]),
        "channels": channels[:n_levels],
        "kernel_size": h["kernel_size"],
        "stride": h["stride"],
        "patch_size": h["patch_size"],
        "mask_ratio": _f32(h["mask_ratio"]),
        "normalizer": validate_spec(meta["normalizer"]),
        "decoder": with_decoder,
    }
    shapes = expected_tensors(config, with_decoder)
    entries = _check_entries(table_bytes, h, shapes, n)

    by_offset = sorted(entries, key=lambda e: (e[1], e[2]))
    for (name_a, off_a, size_a, _), (name_b, off_b, _, _) in zip(by_offset, by_offset[1:]):
        if off_a + size_a > off_b:
            raise ModelFileError(f"tensors '{name_a}' and '{name_b}' overlap")
    for name, off, size, crc in entries:
        if zlib.crc32(buf[off : off + size]) != crc:
            raise ModelFileError(f"tensor '{name}' checksum mismatch")
    tensors = {}
    for name, off, size, _crc in entries:
        a = np.frombuffer(buf, dtype="<f4", count=size // 4, offset=off)
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise ModelFileError(f"tensor '{name}' contains NaN or Inf at index {bad[0]}")
        tensors[name] = flush_subnormals(a).reshape(shapes[name])
    if struct.unpack_from("<I", buf, n - FOOTER_SIZE)[0] != zlib.crc32(buf[: n - FOOTER_SIZE]):
        raise ModelFileError("file checksum mismatch")
    return ModelFile(config=config, meta=meta, tensors={name: tensors[name] for name in shapes})


def _absurd(field_name: str, value) -> ModelFileError:
    return ModelFileError(f"absurd configuration: {field_name} = {value}")


def _check_configuration(h: dict, channels: list[int], buf: bytes) -> None:
    """Header rules on the model configuration (check 7)."""
    if h["header_size"] != HEADER_SIZE:
        raise _absurd("header_size", h["header_size"])
    if not 1 <= h["tensor_count"] <= MAX_TENSORS:
        raise _absurd("tensor_count", h["tensor_count"])
    if not 1 <= h["in_channels"] <= 64:
        raise _absurd("in_channels", h["in_channels"])
    if not 8 <= h["window"] <= 1 << 20:
        raise _absurd("window", h["window"])
    if not 1 <= h["n_levels"] <= MAX_LEVELS or -(-h["window"] // 2 ** (h["n_levels"] - 1)) < 1:
        raise _absurd("n_levels", h["n_levels"])
    if h["kernel_size"] % 2 != 1 or not 1 <= h["kernel_size"] <= 15:
        raise _absurd("kernel_size", h["kernel_size"])
    if h["stride"] != 2:
        raise _absurd("stride", h["stride"])
    if not (math.isfinite(h["fs"]) and 0 < h["fs"] <= 100_000):
        raise _absurd("fs", _f32(h["fs"]))
    if not 1 <= h["patch_size"] <= h["window"]:
        raise _absurd("patch_size", h["patch_size"])
    if not (math.isfinite(h["mask_ratio"]) and 0 <= h["mask_ratio"] < 1):
        raise _absurd("mask_ratio", _f32(h["mask_ratio"]))
    if h["flags"] & ~FLAG_DECODER:
        raise _absurd("flags", h["flags"])
    for level, c in enumerate(channels):
        if (level < h["n_levels"] and not 1 <= c <= 4096) or (level >= h["n_levels"] and c != 0):
            raise _absurd(f"channels[{level}]", c)
    if any(buf[RESERVED_RANGE[0] : RESERVED_RANGE[1]]):
        raise _absurd("reserved", "nonzero")
    needed = len(expected_tensors(
        {"channels": channels[: h["n_levels"]], "kernel_size": h["kernel_size"], "in_channels": h["in_channels"]},
        bool(h["flags"] & FLAG_DECODER),
    ))
    if h["tensor_count"] != needed:
        raise _absurd("tensor_count", h["tensor_count"])


def _check_sections(h: dict, n: int) -> None:
    """Offsets, sizes, order and alignment of metadata, table and data (check 8)."""
    end = n - FOOTER_SIZE
    mo, ms = h["meta_offset"], h["meta_size"]
    if mo < HEADER_SIZE or mo % ALIGN or not 2 <= ms <= MAX_META_SIZE or mo + ms > end:
        raise ModelFileError("section out of range: meta")
    to, table_end = h["table_offset"], h["table_offset"] + ENTRY_SIZE * h["tensor_count"]
    if to < mo + ms or to % ALIGN or table_end > end:
        raise ModelFileError("section out of range: table")
    do = h["data_offset"]
    if do < table_end or do % ALIGN or do > end:
        raise ModelFileError("section out of range: data")


def _parse_meta(meta_bytes: bytes, in_channels: int) -> dict:
    """The metadata JSON object, with name, channel_names and normalizer checked (check 9)."""
    try:
        if b"\0" in meta_bytes:
            raise ValueError("contains a NUL byte")
        meta = json.loads(meta_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"metadata is not a JSON object: {exc}") from None
    except RecursionError:
        raise ModelFileError("metadata is not a JSON object: nested too deeply") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"metadata is not a JSON object: got {type(meta).__name__}")
    names = meta.get("channel_names")
    if not isinstance(meta.get("name"), str):
        raise ModelFileError("metadata is not a JSON object with a string 'name'")
    if not (isinstance(names, list) and len(names) == in_channels and all(isinstance(s, str) for s in names)):
        raise ModelFileError(f"metadata is not a JSON object with {in_channels} 'channel_names' strings")
    try:
        validate_spec(meta.get("normalizer"))
    except ValueError as exc:
        raise ModelFileError(f"metadata is not a JSON object with a valid 'normalizer': {exc}") from None
    return meta


def _check_entries(table: bytes, h: dict, shapes: dict, n: int) -> list[tuple[str, int, int, int]]:
    """Per-entry checks (check 11); returns (name, offset, nbytes, crc32) in table order."""
    entries = []
    seen = set()
    for i in range(h["tensor_count"]):
        raw_name, dtype, ndim, *rest = struct.unpack_from(ENTRY_FORMAT, table, ENTRY_SIZE * i)
        dims, (offset, nbytes, crc, reserved) = rest[:4], rest[4:]
        name = _entry_name(raw_name, i)
        if name in seen:
            raise ModelFileError(f"duplicate tensor '{name}'")
        seen.add(name)
        if name not in shapes:
            raise ModelFileError(f"unexpected tensor '{name}'")
        if dtype != DTYPE_F32:
            raise ModelFileError(f"tensor '{name}': unsupported dtype {dtype}")
        used = dims[:ndim] if 1 <= ndim <= 4 else []
        if (
            not used
            or min(used) < 1
            or any(dims[ndim:])
            or nbytes != 4 * math.prod(used)
            or nbytes > n
            or reserved != 0
        ):
            raise ModelFileError(f"tensor '{name}': absurd size")
        if tuple(used) != shapes[name]:
            raise ModelFileError(f"tensor '{name}' has shape {list(used)}, configuration needs {list(shapes[name])}")
        if offset % ALIGN or offset < h["data_offset"] or offset + nbytes > n - FOOTER_SIZE:
            raise ModelFileError(f"tensor '{name}': data out of range")
        entries.append((name, offset, nbytes, crc))
    for name in shapes:
        if name not in seen:
            raise ModelFileError(f"missing tensor '{name}'")
    return entries


def _entry_name(raw: bytes, index: int) -> str:
    """A NUL-terminated, NUL-padded printable-ASCII name, or the entry's error."""
    end = raw.find(b"\0")
    if end < 1 or any(raw[end:]) or not all(0x21 <= c <= 0x7E for c in raw[:end]):
        raise ModelFileError(f"bad tensor name at entry {index}")
    return raw[:end].decode("ascii")
