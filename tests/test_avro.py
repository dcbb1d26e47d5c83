"""Avro object container files and Empatica EmbracePlus recordings, checked against fastavro (an independent
implementation of the format) writing and reading the same files."""

import io

import fastavro
import numpy as np
import pytest
from conftest import embed_each
from edited import load_edited, refusal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from himae_stream import avro
from himae_stream.recordings import load

#: Every Avro type, nested: named types referred to by name, a namespace, a logical type, unions.
EVERY_TYPE = {
    "type": "record", "name": "Everything", "namespace": "test.avro",
    "fields": [
        {"name": "flag", "type": "boolean"},
        {"name": "small", "type": "int"},
        {"name": "big", "type": "long"},
        {"name": "single", "type": "float"},
        {"name": "double", "type": "double"},
        {"name": "raw", "type": "bytes"},
        {"name": "text", "type": "string"},
        {"name": "nothing", "type": "null"},
        {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN", "IR"]}},
        {"name": "id", "type": {"type": "fixed", "name": "Id", "size": 4}},
        {"name": "when", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "maybe", "type": ["null", "Colour", "double"]},
        {"name": "tags", "type": {"type": "map", "values": "long"}},
        {"name": "floats", "type": {"type": "array", "items": "float"}},
        {"name": "doubles", "type": {"type": "array", "items": "double"}},
        {"name": "ints", "type": {"type": "array", "items": "int"}},
        {"name": "longs", "type": {"type": "array", "items": "long"}},
        {"name": "names", "type": {"type": "array", "items": "string"}},
        {"name": "children", "type": {"type": "array", "items": {
            "type": "record", "name": "Child", "fields": [{"name": "id", "type": "test.avro.Id"},
                                                         {"name": "colour", "type": "Colour"}]}}},
    ],
}


def every_type(i: int) -> dict:
    rng = np.random.default_rng(i)
    return {
        "flag": bool(i % 2), "small": -(2**31) if i == 0 else int(rng.integers(-1000, 1000)),
        "big": 2**63 - 1 if i == 0 else -(2**63) if i == 1 else int(rng.integers(-2**40, 2**40)),
        "single": float(np.float32(rng.normal())), "double": float(rng.normal()), "raw": bytes(range(i % 7)),
        "text": "ppg ✓" * i, "nothing": None, "colour": ["RED", "GREEN", "IR"][i % 3], "id": bytes([i, 1, 2, 3]),
        "when": 1_700_000_000_000_000 + i, "maybe": [None, "IR", 2.5][i % 3], "tags": {f"k{j}": -j for j in range(i)},
        "floats": rng.normal(size=i * 50).astype(np.float32).tolist(), "doubles": rng.normal(size=i).tolist(),
        "ints": rng.integers(-2**31, 2**31, size=i * 40).tolist(),
        "longs": [0, 1, -1, 63, -64, 64, 2**63 - 1, -(2**63)] * i + rng.integers(-2**62, 2**62, size=i).tolist(),
        "names": [f"n{j}" for j in range(i)], "children": [{"id": bytes(4), "colour": "GREEN"}] * (i % 3),
    }


def plain(value):
    """A decoded value as fastavro gives it: numpy arrays as lists, a timestamp as microseconds."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if hasattr(value, "timestamp"):
        return round(value.timestamp() * 1e6)
    return value


def container(schema, records, codec="null", sync_interval=16000) -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), records, codec=codec, sync_interval=sync_interval)
    return out.getvalue()


@pytest.mark.parametrize("codec", ["null", "deflate"])
@pytest.mark.parametrize("sync_interval", [100, 16000])
def test_every_type_decodes_as_fastavro_reads_it(codec, sync_interval):
    data = container(EVERY_TYPE, [every_type(i) for i in range(12)], codec, sync_interval)
    mine = avro.read(data)
    theirs = list(fastavro.reader(io.BytesIO(data)))
    assert len(mine) == 12
    assert [plain(m) for m in mine] == [plain(t) for t in theirs]
    assert isinstance(mine[5]["floats"], np.ndarray) and mine[5]["floats"].dtype == np.float32
    assert mine[5]["longs"].dtype == np.int64 and mine[0]["big"] == 2**63 - 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=300), st.integers(1, 50))
def test_arrays_of_longs_decode_in_one_step_as_one_by_one(values, block):
    """The vectorised varint decoder, on any values and however fastavro splits the array into blocks."""
    schema = {"type": "record", "name": "R", "fields": [{"name": "v", "type": {"type": "array", "items": "long"}}]}
    data = container(schema, [{"v": values}], sync_interval=block)
    assert avro.read(data)[0]["v"].tolist() == values


#: What an Empatica EmbracePlus raw data file holds, in part: a session record, its raw data per sensor.
EMBRACEPLUS = {
    "type": "record", "name": "Session", "namespace": "empatica.format.avro",
    "fields": [
        {"name": "schemaVersion", "type": {"type": "record", "name": "Version", "fields": [
            {"name": "major", "type": "int"}, {"name": "minor", "type": "int"}, {"name": "patch", "type": "int"}]}},
        {"name": "deviceSn", "type": "string"},
        {"name": "rawData", "type": {"type": "record", "name": "RawData", "fields": [
            {"name": "accelerometer", "type": {"type": "record", "name": "Accelerometer", "fields": [
                {"name": "timestampStart", "type": "long"}, {"name": "samplingFrequency", "type": "float"},
                {"name": "x", "type": {"type": "array", "items": "int"}},
                {"name": "y", "type": {"type": "array", "items": "int"}},
                {"name": "z", "type": {"type": "array", "items": "int"}}]}},
            {"name": "eda", "type": {"type": "record", "name": "Eda", "fields": [
                {"name": "timestampStart", "type": "long"}, {"name": "samplingFrequency", "type": "float"},
                {"name": "values", "type": {"type": "array", "items": "float"}}]}},
            {"name": "bvp", "type": {"type": "record", "name": "Bvp", "fields": [
                {"name": "timestampStart", "type": "long"}, {"name": "samplingFrequency", "type": "float"},
                {"name": "values", "type": {"type": "array", "items": "float"}}]}},
            {"name": "systolicPeaks", "type": {"type": "record", "name": "SystolicPeaks", "fields": [
                {"name": "peaksTimeNanos", "type": {"type": "array", "items": "long"}}]}},
        ]}},
    ],
}


def session(bvp: np.ndarray, fs: float = 64.0) -> dict:
    n, start = len(bvp), 1_700_000_000_000_000
    raw = {"accelerometer": {"timestampStart": start, "samplingFrequency": fs, "x": [12] * n, "y": [-2000] * n,
                             "z": [150] * n},
           "eda": {"timestampStart": start, "samplingFrequency": 4.0, "values": [0.1] * 40},
           "bvp": {"timestampStart": start, "samplingFrequency": fs, "values": bvp.tolist()},
           "systolicPeaks": {"peaksTimeNanos": [start * 1000 + k * 10**9 for k in range(5)]}}
    return {"schemaVersion": {"major": 6, "minor": 4, "patch": 0}, "deviceSn": "3YK3J151VJ", "rawData": raw}


def bvp_signal(seconds: float = 60, fs: float = 64.0) -> np.ndarray:
    t = np.arange(int(seconds * fs)) / fs
    return (40 * np.sin(2 * np.pi * 1.3 * t) + 5 * np.sin(2 * np.pi * 2.6 * t)).astype(np.float32)


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_an_embraceplus_file_gives_its_bvp(tmp_path, codec):
    bvp = bvp_signal()
    path = tmp_path / "1-1-S01_1700000000.avro"
    path.write_bytes(container(EMBRACEPLUS, [session(bvp)], codec))
    rec = load(path)
    assert (rec.fs, rec.channel_names, rec.name, rec.start) == (64.0, ["BVP"], "1-1-S01_1700000000", 1_700_000_000.0)
    assert np.array_equal(rec.signals[0], bvp.astype(np.float64))


def test_himae_embed_reads_an_embraceplus_file_as_the_same_signal_in_npz(tmp_path, himae, random_model_file):
    bvp = bvp_signal(90)
    (tmp_path / "s.avro").write_bytes(container(EMBRACEPLUS, [session(bvp)], "deflate"))
    np.savez(tmp_path / "same.npz", signals=bvp.astype(np.float64)[None], fs=64.0, channel_names=["BVP"])
    out = embed_each(himae, random_model_file("himae-25"), tmp_path / "s.avro", tmp_path / "same.npz")
    assert len(out[1]["start"]) > 50
    assert out[0]["recording_start"].tolist() == [1_700_000_000.0] and np.isnan(out[1]["recording_start"]).all()
    for key in ("start", "level1", "level3"):
        assert np.array_equal(out[0][key], out[1][key]), key


def test_a_file_that_is_not_an_embraceplus_recording_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "bad.avro"
    good = container(EMBRACEPLUS, [session(bvp_signal(5))])
    assert "not an Avro object container file" in refusal(bad, b"PK\x03\x04" + good[4:])
    assert "bytes needed at byte" in refusal(bad, good[:-40])
    assert "not followed by the file's sync marker" in refusal(bad, good[:-1] + bytes([good[-1] ^ 1]))
    assert "holds no samples" in refusal(bad, container(EMBRACEPLUS, [session(np.zeros(0, np.float32))]))
    two = container(EMBRACEPLUS, [session(bvp_signal(1))] * 2)
    assert "2 objects; an EmbracePlus file holds one session" in refusal(bad, two)
    other = {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "int"}]}
    assert "no rawData.bvp" in refusal(bad, container(other, [{"x": 1}]))
    bomb = {"type": "record", "name": "Bomb", "fields": [{"name": "x", "type": "bytes"}]}
    assert "expands more than 64 times" in refusal(bad, container(bomb, [{"x": bytes(1 << 20)}], "deflate"))
    def with_schema(text: str) -> bytes:
        return avro.MAGIC + b"\x02" + b"\x16avro.schema" + _long(len(text)) + text.encode() + b"\x00" + bytes(16)

    nested = '{"type": "array", "items": ' * 5000 + '"int"' + "}" * 5000
    assert "nests deeper than Python can follow" in refusal(bad, with_schema(nested))
    untyped = '{"type": "record", "name": "R", "fields": [{"name": "x"}]}'
    assert "its schema is not an Avro schema (KeyError: 'type')" in refusal(bad, with_schema(untyped))
    assert "the schema names an unknown type 'Foo'" in refusal(bad, with_schema('"Foo"'))


def _long(n: int) -> bytes:
    """n (>= 0) as an Avro long."""
    z, out = n << 1, bytearray()
    while z >= 0x80:
        out.append(z & 0x7F | 0x80)
        z >>= 7
    return bytes(out + bytes([z]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 3000), st.binary(min_size=1, max_size=6)), min_size=1, max_size=4),
       cut=st.integers(0, 40), codec=st.sampled_from(["null", "deflate"]))
def test_any_edit_of_a_file_is_read_or_refused_as_a_recording_error(tmp_path, edits, cut, codec):
    """Bytes overwritten anywhere and the end cut off: the Avro reader decodes the file or raises AvroError,
    nothing else (a recording's refusal is then one line)."""
    raw = container(EMBRACEPLUS, [session(bvp_signal(4))], codec)
    rec = load_edited(tmp_path / "edited.avro", raw, edits, cut)
    assert rec is None or rec.signals.ndim == 2
    try:
        avro.read((tmp_path / "edited.avro").read_bytes())
    except avro.AvroError:
        pass
