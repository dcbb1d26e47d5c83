"""Build the model file corpus: one valid tiny model and broken variants of it.

Each broken file has one fault. Where a fault sits behind a checksum, the
checksums in front of the intended check are recomputed, so the intended
check is the one that fires. `expected.json` maps every file to the start of
the message a loader must give (null: the file is valid). Shared by the
Python reader tests, the C loader tests and the fuzzers as seeds.

    python tests/corpus/make_corpus.py [OUT_DIR]
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from himae_stream import modelfile  # noqa: E402
from himae_stream.modelfile import ENTRY_FORMAT, ENTRY_SIZE, HEADER_CRC_OFFSET, HEADER_FIELDS  # noqa: E402

CONFIG = {
    "name": "corpus-tiny",
    "fs": 25.0,
    "window": 64,
    "in_channels": 1,
    "channel_names": ["PPG"],
    "channels": [4, 8],
    "kernel_size": 5,
    "stride": 2,
    "patch_size": 4,
    "mask_ratio": 0.75,
    "normalizer": {"kind": "minmax"},
    "decoder": True,
}


class Model:
    """A model file's bytes with its layout, editable field by field."""

    def __init__(self, buf: bytes):
        self.buf = bytearray(buf)
        self.names = list(modelfile.expected_tensors(CONFIG, CONFIG["decoder"]))

    def get(self, field: str):
        fmt, off = HEADER_FIELDS[field]
        return struct.unpack_from(fmt, self.buf, off)[0]

    def set(self, field: str, value) -> "Model":
        fmt, off = HEADER_FIELDS[field]
        struct.pack_into(fmt, self.buf, off, value)
        return self

    def entry_offset(self, name: str) -> int:
        return self.get("table_offset") + ENTRY_SIZE * self.names.index(name)

    def entry(self, name: str) -> list:
        return list(struct.unpack_from(ENTRY_FORMAT, self.buf, self.entry_offset(name)))

    def set_entry(self, tensor: str, **fields) -> "Model":
        keys = ["name", "dtype", "ndim", "d0", "d1", "d2", "d3", "offset", "nbytes", "crc32", "reserved"]
        values = dict(zip(keys, self.entry(tensor)))
        values.update(fields)
        struct.pack_into(ENTRY_FORMAT, self.buf, self.entry_offset(tensor), *[values[k] for k in keys])
        return self

    def tensor(self, name: str) -> tuple[int, int]:
        e = self.entry(name)
        return e[7], e[8]

    def reseal(self, meta=False, table=False, header=True, footer=True) -> "Model":
        """Recompute the named checksums (in dependency order: meta, table, header, file)."""
        if meta:
            mo, ms = self.get("meta_offset"), self.get("meta_size")
            self.set("meta_crc32", zlib.crc32(self.buf[mo : mo + ms]))
        if table:
            to = self.get("table_offset")
            self.set("table_crc32", zlib.crc32(self.buf[to : to + ENTRY_SIZE * self.get("tensor_count")]))
        if header:
            struct.pack_into("<I", self.buf, HEADER_CRC_OFFSET, zlib.crc32(self.buf[:HEADER_CRC_OFFSET]))
        if footer:
            end = len(self.buf) - 8
            struct.pack_into("<I", self.buf, end, zlib.crc32(self.buf[:end]))
        return self

    def flip(self, offset: int) -> "Model":
        self.buf[offset] ^= 0x5A
        return self


def tiny_tensors(seed: int = 2026) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: (rng.standard_normal(shape) * 0.3).astype(np.float32)
        for name, shape in modelfile.expected_tensors(CONFIG).items()
    }


def with_metadata(text: bytes) -> bytes:
    """The corpus model with `text` as its whole metadata, laid out and checksummed, unchecked."""
    tensors = tiny_tensors()
    arrays = {name: tensors[name] for name in modelfile.expected_tensors(CONFIG)}
    return modelfile.assemble(CONFIG, arrays, text)


def cases(valid: bytes) -> dict[str, tuple[bytes, str | None, str]]:
    """file name -> (bytes, expected message prefix or None, what is wrong)."""
    m = lambda: Model(valid)  # noqa: E731
    n = len(valid)
    base = m()
    meta_at, table_at, data_at = base.get("meta_offset"), base.get("table_offset"), base.get("data_offset")
    w0, b0 = "encoder.0.conv1.weight", "encoder.0.conv1.bias"
    w0_off, w0_size = base.tensor(w0)
    b0_off, b0_size = base.tensor(b0)
    nan_name = "encoder.1.conv2.weight"

    def poke_f32(name: str, index: int, value: float) -> Model:
        x = m()
        off, size = x.tensor(name)
        struct.pack_into("<f", x.buf, off + 4 * index, value)
        x.set_entry(name, crc32=zlib.crc32(x.buf[off : off + size]))
        return x.reseal(table=True)

    def new_meta(text: bytes) -> Model:
        x = m()
        size = x.get("meta_size")
        x.buf[meta_at : meta_at + size] = text.ljust(size)
        return x.reseal(meta=True)

    c: dict[str, tuple[bytes, str | None, str]] = {}
    c["valid.himae"] = (valid, None, "a valid model (1 channel, window 64, channels [4, 8], decoder)")
    enc = modelfile.encode({**CONFIG, "decoder": False}, {k: v for k, v in tiny_tensors().items()
                                                         if k.startswith("encoder")})
    c["valid_encoder_only.himae"] = (enc, None, "a valid encoder-only model")
    c["empty.himae"] = (b"", "truncated: file has 0 bytes, less than the 264-byte minimum", "empty file")
    c["truncated_header.himae"] = (valid[:100], "truncated: file has 100 bytes, less than the 264-byte minimum",
                                   "cut inside the header")
    for label, cut in (("meta", meta_at + 20), ("table", table_at + 150), ("data", data_at + 100), ("footer", n - 4)):
        c[f"truncated_in_{label}.himae"] = (valid[:cut], f"truncated: header says {n} bytes, file has {cut}",
                                            f"cut inside the {label}")
    c["trailing_data.himae"] = (valid + bytes(64), f"trailing data: header says {n} bytes, file has {n + 64}",
                                "64 extra bytes after the footer")
    c["bad_magic.himae"] = (b"HIMAEMDX" + valid[8:], "bad magic: not a HiMAE model file", "wrong magic")
    c["future_version.himae"] = (m().set("version", 2).reseal().buf, "unsupported format version 2 (this reader "
                                 "supports 1)", "format version 2")
    c["flip_header.himae"] = (m().flip(72).buf, "header checksum mismatch", "one flipped byte in the window field")
    c["flip_meta.himae"] = (m().flip(meta_at + 5).buf, "metadata checksum mismatch", "one flipped byte in metadata")
    c["flip_table.himae"] = (m().flip(table_at + ENTRY_SIZE + 60).buf, "tensor table checksum mismatch",
                             "one flipped byte in the tensor table")
    c["flip_data.himae"] = (m().flip(b0_off + 3).buf, f"tensor '{b0}' checksum mismatch",
                            "one flipped byte in tensor data")
    c["flip_padding.himae"] = (m().flip(b0_off + b0_size + 1).buf, "file checksum mismatch",
                               "one flipped byte in the zero padding after a tensor")
    c["flip_file_crc.himae"] = (m().flip(n - 8).buf, "file checksum mismatch", "one flipped byte in the file CRC")
    bad_footer = m()
    bad_footer.buf[n - 1] = ord("X")
    c["bad_footer.himae"] = (bad_footer.buf, "bad footer", "footer magic HENX")
    c["absurd_n_levels.himae"] = (m().set("n_levels", 1000).reseal().buf, "absurd configuration: n_levels = 1000",
                                  "n_levels 1000")
    c["absurd_window.himae"] = (m().set("window", 0xFFFFFFFF).reseal().buf,
                                "absurd configuration: window = 4294967295", "window 2^32-1")
    c["absurd_in_channels.himae"] = (m().set("in_channels", 0).reseal().buf,
                                     "absurd configuration: in_channels = 0", "no input channels")
    c["absurd_tensor_count.himae"] = (m().set("tensor_count", 1_000_000).reseal().buf,
                                      "absurd configuration: tensor_count = 1000000", "a million tensors")
    c["absurd_fs_nan.himae"] = (m().set("fs", float("nan")).reseal().buf, "absurd configuration: fs = nan",
                                "sampling rate NaN")
    c["absurd_stride.himae"] = (m().set("stride", 3).reseal().buf, "absurd configuration: stride = 3", "stride 3")
    c["absurd_kernel_even.himae"] = (m().set("kernel_size", 4).reseal().buf,
                                     "absurd configuration: kernel_size = 4", "even kernel")
    c["absurd_mask_ratio.himae"] = (m().set("mask_ratio", 1.5).reseal().buf,
                                    "absurd configuration: mask_ratio = 1.5", "mask ratio 1.5")
    c["absurd_flags.himae"] = (m().set("flags", 3).reseal().buf, "absurd configuration: flags = 3",
                               "unknown flag bit")
    huge_channels = m()
    struct.pack_into("<I", huge_channels.buf, modelfile.CHANNELS_OFFSET + 4, 1 << 30)
    c["absurd_channels.himae"] = (huge_channels.reseal().buf, "absurd configuration: channels[1] = 1073741824",
                                  "level 1 with 2^30 channels")
    c["count_vs_flags.himae"] = (m().set("flags", 0).reseal().buf, "absurd configuration: tensor_count = 20",
                                 "decoder flag cleared: 20 tensors for an encoder-only configuration")
    c["absurd_meta_size.himae"] = (m().set("meta_size", 1 << 62).reseal().buf, "section out of range: meta",
                                   "metadata size 2^62")
    c["misaligned_table.himae"] = (m().set("table_offset", table_at + 4).reseal().buf,
                                   "section out of range: table", "table offset not a multiple of 64")
    c["data_over_table.himae"] = (m().set("data_offset", table_at).reseal().buf, "section out of range: data",
                                  "data section starts inside the table")
    c["meta_not_object.himae"] = (new_meta(b"[1, 2, 3]").reseal().buf, "metadata is not a JSON object",
                                  "metadata is a JSON array")
    c["meta_nul.himae"] = (new_meta(b'{"name": "x\0"}').reseal().buf, "metadata is not a JSON object",
                           "metadata holds a NUL byte")
    c["bad_name.himae"] = (m().set_entry(b0, name=b"A" * 48).reseal(table=True).buf,
                           "bad tensor name at entry 1", "tensor name without NUL terminator")
    c["duplicate_name.himae"] = (m().set_entry(b0, name=w0.encode()).reseal(table=True).buf,
                                 f"duplicate tensor '{w0}'", "two entries named alike")
    c["unexpected_name.himae"] = (m().set_entry(b0, name=b"encoder.9.conv1.bias").reseal(table=True).buf,
                                  "unexpected tensor 'encoder.9.conv1.bias'", "a tensor the configuration lacks")
    c["unsupported_dtype.himae"] = (m().set_entry(w0, dtype=2).reseal(table=True).buf,
                                    f"tensor '{w0}': unsupported dtype 2", "dtype 2")
    c["absurd_dims.himae"] = (m().set_entry(w0, d0=1 << 31, d1=1 << 31, d2=1 << 31).reseal(table=True).buf,
                              f"tensor '{w0}': absurd size", "dims 2^31 × 2^31 × 2^31")
    c["absurd_nbytes.himae"] = (m().set_entry(w0, nbytes=1 << 63).reseal(table=True).buf,
                                f"tensor '{w0}': absurd size", "nbytes 2^63")
    c["absurd_ndim.himae"] = (m().set_entry(w0, ndim=9).reseal(table=True).buf, f"tensor '{w0}': absurd size",
                              "ndim 9")
    c["shape_vs_config.himae"] = (m().set_entry(w0, d2=3, nbytes=4 * 4 * 1 * 3).reseal(table=True).buf,
                                  f"tensor '{w0}' has shape [4, 1, 3], configuration needs [4, 1, 5]",
                                  "kernel 3 in the table, 5 in the header")
    narrow = m()
    struct.pack_into("<I", narrow.buf, modelfile.CHANNELS_OFFSET + 4, 6)
    c["config_vs_shape.himae"] = (narrow.reseal().buf,
                                  "tensor 'encoder.1.conv1.weight' has shape [8, 4, 5], configuration needs [6, 4, 5]",
                                  "header says level 1 has 6 channels, tensors have 8")
    c["offset_beyond_file.himae"] = (m().set_entry(w0, offset=1 << 40).reseal(table=True).buf,
                                     f"tensor '{w0}': data out of range", "tensor offset 2^40")
    c["offset_misaligned.himae"] = (m().set_entry(w0, offset=w0_off + 4).reseal(table=True).buf,
                                    f"tensor '{w0}': data out of range", "tensor offset not a multiple of 64")
    c["offset_before_data.himae"] = (m().set_entry(w0, offset=table_at).reseal(table=True).buf,
                                     f"tensor '{w0}': data out of range", "tensor inside the table")
    c["overlap.himae"] = (m().set_entry(b0, offset=w0_off + 64).reseal(table=True).buf,
                          f"tensors '{w0}' and '{b0}' overlap", "bias starts inside the weight")
    c["nan_weight.himae"] = (poke_f32(nan_name, 7, float("nan")).buf,
                             f"tensor '{nan_name}' contains NaN or Inf at index 7", "a NaN weight")
    c["inf_weight.himae"] = (poke_f32("head.bias", 0, float("-inf")).buf,
                             "tensor 'head.bias' contains NaN or Inf at index 0", "an infinite bias")
    return c


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    valid = modelfile.encode(CONFIG, tiny_tensors(), {"provenance": {"source": "tests/corpus/make_corpus.py"}})
    expected = {}
    for name, (data, message, about) in cases(valid).items():
        (out / name).write_bytes(bytes(data))
        expected[name] = {"error": message, "about": about}
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
