"""Model file writer and reader: round trip, and refusal of every malformed file."""

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from readers import outcomes_of

from himae_stream import modelfile
from himae_stream.errors import ModelFileError
from training import HiMAE, export_model, get_config
from training.export import folded_tensors

CORPUS = Path(__file__).parent / "corpus"


def test_export_read_round_trip_is_identical(tmp_path):
    config = get_config("himae-100")
    model = HiMAE(config).eval()
    path = tmp_path / "m.himae"
    export_model(model, path, provenance={"seed": 3}, probes=[{"name": "hr"}], card={"summary": "test"})
    f = modelfile.read(path)
    assert f.config == config
    assert f.meta["provenance"] == {"seed": 3} and f.meta["probes"] == [{"name": "hr"}]
    want = folded_tensors(model)
    assert list(f.tensors) == list(modelfile.expected_tensors(config))
    for name, array in want.items():
        assert f.tensors[name].dtype == np.float32
        np.testing.assert_array_equal(f.tensors[name], array)


def test_encoder_only_model_round_trips(tmp_path):
    config = get_config("himae-25", decoder=False, in_channels=2, channel_names=["PPG1", "PPG2"], fs=31.25)
    path = tmp_path / "enc.himae"
    export_model(HiMAE(config).eval(), path)
    f = modelfile.read(path)
    assert f.config == config
    assert not any(name.startswith(("decoder", "head")) for name in f.tensors)


def test_layout_is_aligned_and_checksummed(tmp_path):
    path = tmp_path / "m.himae"
    export_model(HiMAE(get_config("himae-25")).eval(), path)
    buf = path.read_bytes()
    assert buf[:8] == b"HIMAEMDL" and buf[-4:] == b"HEND"
    assert struct.unpack_from("<I", buf, len(buf) - 8)[0] == zlib.crc32(buf[:-8])
    h = {k: struct.unpack_from(fmt, buf, off)[0] for k, (fmt, off) in modelfile.HEADER_FIELDS.items()}
    assert h["file_size"] == len(buf)
    assert h["meta_offset"] % 64 == h["table_offset"] % 64 == h["data_offset"] % 64 == 0
    for i in range(h["tensor_count"]):
        entry = struct.unpack_from(modelfile.ENTRY_FORMAT, buf, h["table_offset"] + 96 * i)
        offset, nbytes, crc = entry[7], entry[8], entry[9]
        assert offset % 64 == 0 and zlib.crc32(buf[offset : offset + nbytes]) == crc
    assert json.loads(buf[h["meta_offset"] : h["meta_offset"] + h["meta_size"]])["name"] == "himae-25"


def test_writer_refuses_tensors_that_do_not_fit(tmp_path):
    config = get_config("himae-25")
    tensors = folded_tensors(HiMAE(config))
    bad = dict(tensors, **{"head.bias": np.array([np.nan], dtype=np.float32)})
    with pytest.raises(ValueError, match="NaN"):
        modelfile.write(tmp_path / "x.himae", config, bad)
    bad = dict(tensors, **{"head.bias": np.zeros(2, dtype=np.float32)})
    with pytest.raises(ValueError, match="shape"):
        modelfile.write(tmp_path / "x.himae", config, bad)
    with pytest.raises(ValueError, match="missing"):
        modelfile.write(tmp_path / "x.himae", config, {k: v for k, v in tensors.items() if k != "head.bias"})


def _load_corpus_builder():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_corpus = _load_corpus_builder()
EXPECTED = json.loads((CORPUS / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file_gets_its_own_message(name):
    error = EXPECTED[name]["error"]
    if error is None:
        f = modelfile.read(CORPUS / name)
        assert f.config["name"] == "corpus-tiny"
        return
    with pytest.raises(ModelFileError) as info:
        modelfile.read(CORPUS / name)
    assert str(info.value).startswith(error), str(info.value)


def test_corpus_messages_are_distinct_per_fault_kind():
    messages = [e["error"] for e in EXPECTED.values() if e["error"]]
    assert len(messages) >= 40
    # Every check of the spec that a single fault can reach is represented.
    for prefix in ["truncated: file has", "truncated: header says", "trailing data", "bad magic",
                   "unsupported format version", "header checksum", "bad footer", "absurd configuration",
                   "section out of range: meta", "section out of range: table", "section out of range: data",
                   "metadata checksum", "metadata is not a JSON object", "tensor table checksum",
                   "bad tensor name", "duplicate tensor", "unexpected tensor", "unsupported dtype",
                   "absurd size", "configuration needs", "data out of range", "overlap",
                   "' checksum mismatch", "contains NaN or Inf", "file checksum mismatch"]:
        assert any(prefix in m for m in messages), prefix


def test_committed_corpus_matches_its_generator(tmp_path):
    make_corpus.main(tmp_path)
    for path in sorted(tmp_path.iterdir()):
        assert path.read_bytes() == (CORPUS / path.name).read_bytes(), path.name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in CORPUS.iterdir()
                                                                if p.suffix in (".himae", ".json"))


def _decode_only_model_errors(data: bytes) -> None:
    try:
        modelfile.decode(bytes(data))
    except ModelFileError:
        pass


VALID = (CORPUS / "valid.himae").read_bytes()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, len(VALID)), st.booleans())
def test_mutated_files_only_raise_model_file_errors(edits, cut, reseal):
    """Random byte edits and cuts, with and without recomputed checksums, never crash the reader."""
    model = make_corpus.Model(VALID)
    for offset, value in edits:
        model.buf[offset] = value
    if reseal:
        model.reseal(meta=True, table=True)
    _decode_only_model_errors(model.buf[:cut] if cut < len(VALID) else model.buf)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(modelfile.HEADER_FIELDS)), st.integers(0, 2**64 - 1))
def test_any_header_value_is_refused_cleanly(field, value):
    fmt, _ = modelfile.HEADER_FIELDS[field]
    model = make_corpus.Model(VALID)
    if fmt == "<f":
        value = struct.unpack("<f", struct.pack("<I", value & 0xFFFFFFFF))[0]
    else:
        value &= (1 << (8 * struct.calcsize(fmt))) - 1
    model.set(field, value).reseal()
    _decode_only_model_errors(model.buf)



META_HEAD = b'{"name": "x", "channel_names": ["PPG"], "normalizer": '


def _both_readers(tmp_path, data: bytes, name: str = "m.himae") -> tuple[str | None, str | None]:
    """What load_model (the C loader reading the file) and modelfile.read say: None (accepted) or the message."""
    path = tmp_path / name
    path.write_bytes(data)
    return outcomes_of(path)


@pytest.mark.parametrize("depth, ok", [(63, True), (64, False), (100_000, False)])
def test_metadata_nesting_is_limited_the_same_for_both_readers(tmp_path, depth, ok):
    meta = META_HEAD + b'{"kind": "minmax"}, "d": ' + b"[" * depth + b"]" * depth + b"}"
    c, py = _both_readers(tmp_path, make_corpus.with_metadata(meta))
    assert c == py
    assert (c is None) == ok, c
    if not ok:
        assert "metadata is not a JSON object" in c and "nested too deeply" in c


def test_a_huge_integer_in_metadata_is_a_model_file_error(tmp_path):
    """5,000 digits: the C check used to pass it and json.loads to refuse it with a bare ValueError."""
    meta = META_HEAD + b'{"kind": "minmax"}, "seed": ' + b"7" * 5000 + b"}"
    c, py = _both_readers(tmp_path, make_corpus.with_metadata(meta))
    assert c == py and c.startswith("metadata is not a JSON object") and "number too long" in c
    # 100 characters is the limit; such a number loads.
    meta = META_HEAD + b'{"kind": "minmax"}, "seed": ' + b"7" * 100 + b"}"
    assert _both_readers(tmp_path, make_corpus.with_metadata(meta)) == (None, None)


@pytest.mark.parametrize("text, ok", [(rb'"x\ud800"', False), (rb'"\udfff"', False), (rb'"\ud83d\u0041"', False),
                                      (rb'"\ud83d\ude00"', True), (rb'"\u00e9"', True)])
def test_only_paired_surrogate_escapes_are_read(tmp_path, capsys, text, ok):
    """A lone surrogate escape loaded in Python, and then `himae info` could not print the name."""
    from himae_stream.cli import main

    meta = b'{"name": ' + text + b', "channel_names": ["PPG"], "normalizer": {"kind": "minmax"}}'
    c, py = _both_readers(tmp_path, make_corpus.with_metadata(meta))
    assert c == py and (c is None) == ok, c
    if not ok:
        assert "unpaired surrogate at byte" in c
    assert main(["info", str(tmp_path / "m.himae")]) == (0 if ok else 2)


STREAM_NORM = b'{"kind": "stream", "highpass_hz": %s, "lowpass_hz": %s, "scale_k": %s}'


@pytest.mark.parametrize("highpass, lowpass, scale_k", [
    (b"0.5", b"8", b"9" * 99),                     # 99 digits: a large but finite double
    (b"0.5", b"8", b"9" * 400),                    # the 400-digit scale_k that used to raise OverflowError
    (b"%d" % 2**53, b"%d" % (2**53 + 1), b"3"),    # equal as doubles: highpass is not below lowpass
    (b"true", b"8", b"3"),                          # true reads as 1 (as Python's bool is an int) ...
    (b"0.5", b"8", b"false"),                       # ... and false as 0: not positive
    (b"1e400", b"8", b"3"), (b"NaN", b"8", b"3"), (b'"1"', b"8", b"3"), (b"null", b"8", b"3"),
])
def test_readers_agree_on_normaliser_numbers(tmp_path, capsys, highpass, lowpass, scale_k):
    meta = META_HEAD + STREAM_NORM % (highpass, lowpass, scale_k) + b"}"
    c, py = _both_readers(tmp_path, make_corpus.with_metadata(meta))
    assert c == py
    if highpass == b"true" or len(scale_k) == 99:
        assert c is None
        return
    assert c.startswith("metadata is not a JSON object"), c
    from himae_stream.cli import main

    assert main(["info", str(tmp_path / "m.himae")]) == 2  # one line, no traceback
    err = capsys.readouterr().err
    assert err.startswith("himae info: error: metadata is not a JSON object") and err.count("\n") == 1


def test_validate_spec_refuses_huge_integers_with_value_error():
    from himae_stream.normalize import validate_spec

    with pytest.raises(ValueError, match="scale_k must be a positive number, got an integer of 1329 bits"):
        validate_spec({"kind": "stream", "scale_k": 10**400})
    assert validate_spec({"kind": "stream", "clip": 2})["clip"] == 2.0


def test_writer_refuses_metadata_the_loader_would_refuse(tmp_path):
    config = dict(make_corpus.CONFIG)
    with pytest.raises(ValueError, match="would not load: metadata is not a JSON object: nested too deeply"):
        modelfile.write(tmp_path / "x.himae", config, make_corpus.tiny_tensors(), {"deep": json.loads("[" * 70 + "]" * 70)})


@pytest.mark.parametrize("kind", ["device", "directory", "fifo"])
def test_only_regular_files_are_read(tmp_path, kind, capsys):
    """`himae info /dev/zero` used to read until memory ran out; a FIFO without a writer must not hang."""
    import os

    from himae_stream import load_model
    from himae_stream.cli import main

    path = {"device": "/dev/zero", "directory": str(tmp_path)}.get(kind) or str(tmp_path / "fifo")
    if kind == "fifo":
        os.mkfifo(path)
    for load in (load_model, modelfile.read):
        with pytest.raises(ModelFileError, match=rf"^not a regular file \(in {path}\)$"):
            load(path)
    assert main(["info", path]) == 2
    assert capsys.readouterr().err == f"himae info: error: not a regular file (in {path})\n"


def test_files_over_one_gib_are_refused_unread(tmp_path):
    from himae_stream import load_model

    from himae_stream._core import MAX_FILE

    assert modelfile.MAX_FILE_SIZE == MAX_FILE == 1 << 30  # the Python reader's cap is the C loader's
    path = tmp_path / "huge.himae"
    with open(path, "wb") as f:  # sparse: nothing is written
        f.truncate(modelfile.MAX_FILE_SIZE + 1)
    want = f"too large: file has {modelfile.MAX_FILE_SIZE + 1} bytes, more than the 1073741824-byte maximum (in {path})"
    for load in (load_model, modelfile.read):
        with pytest.raises(ModelFileError) as info:
            load(path)
        assert str(info.value) == want


@pytest.mark.parametrize("name", ["bad_magic.himae", "meta_not_object.himae", "truncated_in_data.himae"])
def test_refusals_name_the_file(name, capsys):
    """load_model, modelfile.read and `himae info` name the file after the reason (one line)."""
    from himae_stream import load_model
    from himae_stream.cli import main

    path = CORPUS / name
    reason = EXPECTED[name]["error"]
    for load in (load_model, modelfile.read):
        with pytest.raises(ModelFileError) as info:
            load(path)
        message = str(info.value)
        assert message.startswith(reason) and f"(in {path})" in message and "\n" not in message, message
    assert main(["info", str(path)]) == 2
    assert capsys.readouterr().err == f"himae info: error: {message}\n"
