"""Model file writer and reader: round trip, and refusal of every malformed file."""

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

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
