"""WESAD's and PPG-DaLiA's subject pickles: the wrist PPG read without running what a pickle may name."""

import os
import pickle
import struct

import numpy as np
import pytest
from edited import refusal

from himae_stream.recordings import load


def py2_string(b: bytes) -> bytes:
    """BINSTRING: a Python 2 str."""
    return b"T" + struct.pack("<i", len(b)) + b


def py2_array(a: np.ndarray) -> bytes:
    """A numpy array as Python 2 with numpy 1 pickled it (protocol 2; its bytes a str, its class
    numpy.core.multiarray's), the way the data sets' files hold theirs."""
    dtype = (b"cnumpy\ndtype\n" + py2_string(a.dtype.str[1:].encode()) + b"K\x00K\x01\x87R(K\x03"
             + py2_string(a.dtype.str[:1].encode()) + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    shape = b"(" + b"".join(b"J" + struct.pack("<i", n) for n in a.shape) + b"t"
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + py2_string(b"b") + b"\x87R(K\x01"
            + shape + dtype + b"\x89" + py2_string(np.ascontiguousarray(a).tobytes()) + b"tb")


def py2_subject(bvp: np.ndarray, subject: bytes) -> bytes:
    """{'signal': {'wrist': {'BVP': bvp}}, 'subject': subject}, pickled as by Python 2."""
    def key(k: bytes) -> bytes:
        return b"U" + bytes([len(k)]) + k
    return (b"\x80\x02}(" + key(b"signal") + b"}" + key(b"wrist") + b"}" + key(b"BVP") + py2_array(bvp) + b"ss"
            + key(b"subject") + key(subject) + b"u.")


BVP = (np.sin(np.arange(64 * 30) / 64 * 2 * np.pi * 1.2) * 50).reshape(-1, 1)


def test_a_subject_pickled_by_python_2_gives_its_wrist_ppg(tmp_path):
    path = tmp_path / "S7.pkl"
    path.write_bytes(py2_subject(BVP, b"S7"))
    assert pickle.loads(path.read_bytes(), encoding="latin1")["subject"] == "S7"  # the bytes are a valid pickle
    rec = load(path)
    assert (rec.fs, rec.channel_names, rec.subject) == (64.0, ["BVP"], "S7")
    assert np.array_equal(rec.signals, BVP.T)


@pytest.mark.parametrize("protocol", [2, 5])
def test_a_subject_pickled_by_python_3_gives_its_wrist_ppg(tmp_path, protocol):
    subject = {"signal": {"wrist": {"BVP": BVP, "ACC": np.zeros((32 * 30, 3)), "EDA": np.zeros((120, 1))},
                          "chest": {"ECG": np.zeros((700 * 30, 1))}},
               "label": np.zeros(30, np.int32), "subject": "S2", "questionnaire": {"WEIGHT": 78.0, "AGE": 30}}
    path = tmp_path / "S2.pkl"
    path.write_bytes(pickle.dumps(subject, protocol=protocol))
    rec = load(path)
    assert (rec.fs, rec.subject) == (64.0, "S2") and np.array_equal(rec.signals, BVP.T)


class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_names_anything_but_arrays_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    message = refusal(tmp_path / "evil.pkl", pickle.dumps({"signal": {"wrist": {"BVP": RunsACommand(marker)}}}))
    assert "the pickle names posix.system; only numpy arrays" in message and not marker.exists()
    assert "no signal.wrist.BVP array" in refusal(tmp_path / "other.pkl", pickle.dumps({"signal": [1, 2]}))
    assert "no signal.wrist.BVP array" in refusal(tmp_path / "text.pkl",
                                                  pickle.dumps({"signal": {"wrist": {"BVP": np.array(["a"])}}}))
    # the array numpy's pickle starts from, empty, made 2**28 objects (2 GB written, were it allowed)
    empty, objects = b"K\x00\x85T\x01\x00\x00\x00b", b"J\x00\x00\x00\x10\x85T\x01\x00\x00\x00O"
    huge = py2_subject(BVP, b"S7").replace(empty, objects, 1)
    assert "the pickle builds an array of shape (268435456,) from nothing" in refusal(tmp_path / "huge.pkl", huge)
    called = (b"\x80\x02cnumpy\nndarray\nJ\x00\x00\x00\x10\x85R.")  # numpy.ndarray((2**28,)): 2 GB if allowed
    assert "not a pickle of arrays (TypeError: ArrayToken() takes no arguments)" in refusal(tmp_path / "called.pkl",
                                                                                            called)
    assert "pickle data was truncated" in refusal(tmp_path / "cut.pkl", py2_subject(BVP, b"S7")[:-60])
