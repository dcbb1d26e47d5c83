"""Apache Avro object container files, read whole: what Empatica's EmbracePlus delivers its raw data in.

The reader follows the Avro 1.11 specification: the header (magic, metadata
map with the writer's schema and codec, sync marker), then blocks of objects,
each block checked against the sync marker. Every schema type decodes:
records to dicts, enums to their symbol, unions to the branch's value, maps
to dicts, fixed and bytes to bytes; an array of float, double, int or long
to a numpy array in one step per block (a 15-minute EmbracePlus file holds
about half a million samples), any other array to a list. Codecs: null and
deflate (decompressed up to a bound on the file's size, so a small file
cannot expand without limit).

Every malformed file raises AvroError (a ValueError) naming what is wrong and where.
"""

from __future__ import annotations

import json
import zlib

import numpy as np

MAGIC = b"Obj\x01"
SYNC_BYTES = 16
#: Decompressed bytes a deflate block may have per compressed byte: physiological samples compress a few
#: times, and a block that claims more is a decompression bomb, not a recording.
MAX_INFLATION = 64
PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
#: numpy dtypes of the fixed-width number arrays
FIXED_WIDTH = {"float": np.dtype("<f4"), "double": np.dtype("<f8")}


class AvroError(ValueError):
    """A file is not an Avro object container file, or its bytes do not follow its schema."""


def read(data: bytes) -> list:
    """Every object in the container file `data`, decoded by the schema its header holds."""
    buf = _Buffer(data)
    if buf.take(4) != MAGIC:
        raise AvroError("not an Avro object container file (it does not start with 'Obj\\x01')")
    meta = _map(buf, lambda b: b.bytes())
    try:
        schema = _Schema(json.loads(meta.get("avro.schema", b"").decode("utf-8")))
    except AvroError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AvroError(f"its schema is not JSON: {exc}") from None
    except RecursionError:
        raise AvroError("its schema nests deeper than Python can follow") from None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # a field without a name or type, ...
        raise AvroError(f"its schema is not an Avro schema ({type(exc).__name__}: {exc})") from None
    codec = meta.get("avro.codec", b"null").decode("ascii", "replace")
    if codec not in ("null", "deflate"):
        raise AvroError(f"codec {codec!r} is not supported (null, deflate)")
    sync = buf.take(SYNC_BYTES)
    objects = []
    while not buf.done():
        count, size = buf.long(), buf.long()
        if not 0 <= count <= max(size, 1) or size < 0:  # an object takes a byte, but for an empty one
            raise AvroError(f"a block at byte {buf.at} declares {count} objects in {size} bytes")
        block = buf.take(size)
        if codec == "deflate":
            block = _inflate(block)
        inner = _Buffer(block)
        try:
            objects += [schema.decode(inner) for _ in range(count)]
        except RecursionError:
            raise AvroError(f"an object in the block before byte {buf.at} nests deeper than Python can "
                            "follow") from None
        if not inner.done():
            raise AvroError(f"a block before byte {buf.at} holds {len(block) - inner.at} bytes after its objects")
        if buf.take(SYNC_BYTES) != sync:
            raise AvroError(f"the block ending at byte {buf.at} is not followed by the file's sync marker")
    return objects


def _inflate(block: bytes) -> bytes:
    inflater = zlib.decompressobj(-15)
    try:
        out = inflater.decompress(block, MAX_INFLATION * len(block) + 1024)
    except zlib.error as exc:
        raise AvroError(f"a deflate block does not decompress: {exc}") from None
    if inflater.unconsumed_tail:
        raise AvroError(f"a deflate block expands more than {MAX_INFLATION} times")
    return out


class _Buffer:
    """Bytes read front to back; every read past the end is an AvroError."""

    def __init__(self, data: bytes):
        self.data, self.at = memoryview(data), 0

    def done(self) -> bool:
        return self.at >= len(self.data)

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise AvroError(f"{n} bytes needed at byte {self.at}, {len(self.data) - self.at} left")
        out = bytes(self.data[self.at : self.at + n])
        self.at += n
        return out

    def long(self) -> int:
        """A zigzag varint (int and long alike), at most 10 bytes."""
        value = shift = 0
        for _ in range(10):
            if self.at >= len(self.data):
                raise AvroError(f"a number runs past the end at byte {self.at}")
            byte = self.data[self.at]
            self.at += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return (value >> 1) ^ -(value & 1)
            shift += 7
        raise AvroError(f"a number at byte {self.at - 10} is longer than 10 bytes")

    def bytes(self) -> bytes:
        return self.take(self.long())

    def longs(self, n: int) -> np.ndarray:
        """n (>= 1) zigzag varints at once: their ends are the first n bytes below 0x80."""
        window = np.frombuffer(self.data, np.uint8, min(len(self.data) - self.at, 10 * n), self.at)
        ends = np.flatnonzero(window < 0x80)[:n]
        if len(ends) < n or (np.diff(ends, prepend=-1) > 10).any():
            raise AvroError(f"an array of {n} numbers at byte {self.at} is cut short or malformed")
        window = window[: ends[-1] + 1]
        starts = np.concatenate([[0], ends[:-1] + 1])
        position = np.arange(len(window)) - np.repeat(starts, np.diff(np.append(starts, len(window))))
        parts = (window.astype(np.uint64) & np.uint64(0x7F)) << (np.uint64(7) * position.astype(np.uint64))
        zigzag = np.add.reduceat(parts, starts)
        self.at += len(window)
        return ((zigzag >> np.uint64(1)).astype(np.int64)) ^ -((zigzag & np.uint64(1)).astype(np.int64))


def _map(buf: _Buffer, value) -> dict:
    """An Avro map (string keys), its values decoded by `value`."""
    out = {}
    for _ in _blocks(buf):
        key = buf.bytes().decode("utf-8", "replace")
        out[key] = value(buf)
    return out


def _block_counts(buf: _Buffer):
    """The item count of each block of an array or map, up to the empty block that ends it (a negative count
    is followed by the block's size in bytes)."""
    while True:
        count = buf.long()
        if count == 0:
            return
        if count < 0:
            count = -count
            buf.long()
        if count > len(buf.data) - buf.at:  # an item takes a byte, but for a null: a corrupt count, not a loop
            raise AvroError(f"a block of {count} items at byte {buf.at} is longer than the file")
        yield count


def _blocks(buf: _Buffer):
    """One step per item of an array or map."""
    for count in _block_counts(buf):
        yield from range(count)


class _Schema:
    """A parsed schema: named types resolved, and a decoder for any of its types."""

    def __init__(self, schema):
        self.names: dict[str, object] = {}
        self.root = self._resolve(schema, "")

    def _resolve(self, schema, namespace: str):
        if isinstance(schema, str):
            if schema in PRIMITIVES:
                return schema
            full = schema if "." in schema else f"{namespace}.{schema}" if namespace else schema
            for name in (full, schema):
                if name in self.names:
                    return self.names[name]
            raise AvroError(f"the schema names an unknown type {schema!r}")
        if isinstance(schema, list):
            return ("union", [self._resolve(s, namespace) for s in schema])
        if not isinstance(schema, dict) or "type" not in schema:
            raise AvroError(f"not a schema: {str(schema)[:60]}")
        kind = schema["type"]
        if kind in ("record", "error", "enum", "fixed"):
            name = schema.get("name")
            if not isinstance(name, str):
                raise AvroError(f"a {kind} without a name")
            space = schema.get("namespace", namespace) if "." not in name else name.rsplit(".", 1)[0]
            full = name if "." in name else f"{space}.{name}" if space else name
            node = [kind, None]
            self.names[full] = self.names[name.rsplit(".", 1)[-1]] = node
            if kind == "enum":
                node[1] = list(schema.get("symbols", []))
            elif kind == "fixed":
                node[1] = int(schema.get("size", -1))
            else:
                node[1] = [(f["name"], self._resolve(f["type"], space)) for f in schema.get("fields", [])]
            return node
        if kind == "array":
            return ("array", self._resolve(schema.get("items"), namespace))
        if kind == "map":
            return ("map", self._resolve(schema.get("values"), namespace))
        return self._resolve(kind, namespace)  # a primitive with attributes (a logical type)

    def decode(self, buf: _Buffer, node=None):
        node = self.root if node is None else node
        if isinstance(node, str):
            return self._primitive(buf, node)
        kind, arg = node
        if kind in ("record", "error"):
            return {name: self.decode(buf, field) for name, field in arg}
        if kind == "enum":
            index = buf.long()
            if not 0 <= index < len(arg):
                raise AvroError(f"enum index {index} at byte {buf.at} is not one of its {len(arg)} symbols")
            return arg[index]
        if kind == "fixed":
            return buf.take(arg)
        if kind == "union":
            index = buf.long()
            if not 0 <= index < len(arg):
                raise AvroError(f"union branch {index} at byte {buf.at} is not one of its {len(arg)}")
            return self.decode(buf, arg[index])
        if kind == "map":
            return _map(buf, lambda b: self.decode(b, arg))
        return self._array(buf, arg)

    def _array(self, buf: _Buffer, items):
        if not isinstance(items, str) or items not in (*FIXED_WIDTH, "int", "long"):
            return [self.decode(buf, items) for _ in _blocks(buf)]
        parts = []
        for count in _block_counts(buf):
            if items in FIXED_WIDTH:
                parts.append(np.frombuffer(buf.take(count * FIXED_WIDTH[items].itemsize), FIXED_WIDTH[items]))
            else:
                parts.append(buf.longs(count))
        dtype = FIXED_WIDTH.get(items, np.dtype(np.int64))
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    @staticmethod
    def _primitive(buf: _Buffer, kind: str):
        if kind == "null":
            return None
        if kind == "boolean":
            return buf.take(1) != b"\x00"
        if kind in ("int", "long"):
            return buf.long()
        if kind in FIXED_WIDTH:
            return float(np.frombuffer(buf.take(FIXED_WIDTH[kind].itemsize), FIXED_WIDTH[kind])[0])
        if kind == "bytes":
            return buf.bytes()
        try:
            return buf.bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise AvroError(f"a string before byte {buf.at} is not UTF-8") from None
