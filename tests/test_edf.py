"""EDF, EDF+ and BDF recordings, checked against pyedflib (EDFlib's reader and writer, an independent
implementation of the format)."""

import os

import numpy as np
import pyedflib
import pytest
from conftest import BUNDLED, embed_each
from edited import load_edited, refusal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from himae_stream import edf
from himae_stream.recordings import find_recordings, load

#: A real EDF+ file as EDFlib writes it (shipped with pyedflib): eleven 200-Hz test signals, 10 min.
GENERATOR = os.path.join(os.path.dirname(pyedflib.__file__), "data", "test_generator.edf")


def physical(path, i):
    with pyedflib.EdfReader(str(path)) as f:
        return f.readSignal(i)


def same(got, want):
    """Equal to pyedflib's values but for the last bits (it maps digital to physical by other arithmetic)."""
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


def write(path, signals: dict, file_type=pyedflib.FILETYPE_EDFPLUS, digital=(-32768, 32767)):
    """`signals`: label -> (rate, samples); physical range each signal's own, the whole digital range."""
    with pyedflib.EdfWriter(str(path), len(signals), file_type=file_type) as w:
        w.setSignalHeaders([{"label": label, "dimension": "uV", "sample_frequency": fs,
                             "physical_min": float(np.floor(x.min())) - 1, "physical_max": float(np.ceil(x.max())) + 1,
                             "digital_min": digital[0], "digital_max": digital[1], "transducer": "", "prefilter": ""}
                            for label, (fs, x) in signals.items()])
        w.writeSamples([x for _, x in signals.values()])


def test_reads_a_file_edflib_wrote_as_pyedflib_does():
    rec = load(GENERATOR)
    assert rec.fs == 200.0 and rec.signals.shape == (11, 120_000)
    with pyedflib.EdfReader(GENERATOR) as f:
        assert rec.channel_names == f.getSignalLabels()
        for i in range(11):
            same(rec.signals[i], f.readSignal(i))
    assert find_recordings(os.path.dirname(GENERATOR)) == [find_recordings(GENERATOR)[0]]


@pytest.mark.parametrize("file_type", [pyedflib.FILETYPE_EDFPLUS, pyedflib.FILETYPE_BDFPLUS, pyedflib.FILETYPE_BDF])
def test_signals_at_their_own_rates_give_the_ppgs_or_the_asked_ones(tmp_path, file_type):
    """A PSG-style file: ECG at 256 Hz, Pleth at 64 Hz, accelerometer at 32 Hz. Without channels the recording
    is the PPG's rate group; asked for ECG, the ECG's; each signal's values as pyedflib reads them."""
    rng = np.random.default_rng(0)
    signals = {"ECG": (256, rng.normal(0, 300, 256 * 30)), "Pleth": (64, rng.normal(0, 2000, 64 * 30)),
               "AccX": (32, rng.normal(0, 50, 32 * 30)), "AccY": (32, rng.normal(0, 50, 32 * 30))}
    bdf = file_type != pyedflib.FILETYPE_EDFPLUS
    path = tmp_path / ("psg.bdf" if bdf else "psg.edf")
    write(path, signals, file_type, (-(1 << 23), (1 << 23) - 1) if bdf else (-32768, 32767))
    rec = load(path)
    assert (rec.fs, rec.channel_names, rec.signals.shape) == (64.0, ["Pleth"], (1, 64 * 30))
    ecg = load(path, channels="ECG")
    assert (ecg.fs, ecg.channel_names) == (256.0, ["ECG"])
    acc = load(path, rate_of="acc*")
    assert (acc.fs, acc.channel_names) == (32.0, ["AccX", "AccY"])
    assert load(path, rate_of="AccY").channel_names == ["AccY"]  # only what is asked for becomes float64
    for got, i in ((rec.signals[0], 1), (ecg.signals[0], 0), (acc.signals[1], 3)):
        same(got, physical(path, i))
        x = list(signals.values())[i][1]
        step = (np.ceil(x.max()) - np.floor(x.min()) + 2) / ((1 << (24 if bdf else 16)) - 1)
        assert np.abs(got - x).max() <= 1.01 * step  # the writer's quantisation, no more


def test_a_discontinuous_file_has_its_gaps_as_lost_samples(tmp_path):
    """EDF+D: each data record starts at the onset its annotations give. Records 10 on are moved 5 s later
    (their time-keeping annotations rewritten in place): those 5 s come back as NaN, the samples unmoved."""
    x = np.sin(2 * np.pi * 1.2 * np.arange(64 * 30) / 64) * 1000
    path = tmp_path / "d.edf"
    write(path, {"PPG": (64, x)})
    want = physical(path, 0)
    raw = bytearray(path.read_bytes())
    n_signals, records = int(raw[252:256]), int(raw[236:244])
    header = 256 * (1 + n_signals)
    record = (len(raw) - header) // records
    raw[192:197] = b"EDF+D"
    for r in range(records):
        at = header + r * record + 64 * 2  # the annotations, after the record's 64 PPG samples
        assert raw[at : at + len(f"+{r}\x14\x14")] == f"+{r}\x14\x14".encode(), raw[at : at + 20]
        if r >= 10:
            tal = f"+{r + 5}\x14\x14\x00".encode()
            raw[at : at + len(tal)] = tal
    path.write_bytes(bytes(raw))
    rec = load(path)
    assert rec.signals.shape == (1, 64 * 35)
    lost = np.isnan(rec.signals[0])
    assert np.array_equal(np.flatnonzero(lost), np.arange(64 * 10, 64 * 15))
    same(rec.signals[0, ~lost], want)


def broken(tmp_path, edit) -> str:
    """The one-line refusal of a valid EDF+ file after `edit(bytearray)`."""
    path = tmp_path / "bad.edf"
    write(path, {"Pleth": (64, np.sin(np.arange(640) / 7.0) * 100)})
    raw = bytearray(path.read_bytes())
    edit(raw)
    return refusal(path, bytes(raw))


def test_a_broken_file_is_refused_in_one_line_naming_what_is_wrong(tmp_path):
    def truncate(raw):
        del raw[-5:]

    def version(raw):
        raw[0:8] = b"PK\x03\x04   "

    def digital(raw):
        at = 256 + 2 * 16 + 2 * 80 + 2 * 8 * 3  # signal 0's digital minimum
        raw[at : at + 8] = b"40000   "

    def signal_count(raw):
        raw[252:256] = b"0   "

    def label(raw):
        raw[256:260] = b"\xff\xfe\x00P"

    def onset(raw):
        raw[192:197] = b"EDF+D"
        raw[256 * 3 + 64 * 2 : 256 * 3 + 64 * 2 + 3] = b"abc"

    def tal(record: int, text: bytes):
        """Discontinuous, `text` the start of record's annotations (after its 64 samples; ten records)."""
        def edit(raw):
            raw[192:197] = b"EDF+D"
            at = 256 * 3 + record * ((len(raw) - 256 * 3) // 10) + 64 * 2
            raw[at : at + len(text)] = text
        return edit

    cut = broken(tmp_path, truncate)
    assert "declares 10 data records of" in cut and "the file holds" in cut
    assert "not an EDF or BDF file" in broken(tmp_path, version)
    assert "do not map one onto the other" in broken(tmp_path, digital)
    assert "number of signals is 0" in broken(tmp_path, signal_count)
    assert "label field is not ASCII" in broken(tmp_path, label)
    assert "data record 0: its annotations do not start with its onset" in broken(tmp_path, onset)
    assert "data record 3 starts at 1 s, before the one ahead of it ends" in broken(tmp_path, tal(3, b"+1\x14\x14\0"))
    assert "data record 4's onset is not a number" in broken(tmp_path, tal(4, b"+nan\x14\x14\0"))
    assert "more than 8 times as long (split the file)" in broken(tmp_path, tal(9, b"+1e300\x14\x14\0"))
    assert "more than 8 times as long" in broken(tmp_path, tal(9, b"-1e300\x14\x14\0"))


def test_himae_embed_reads_an_edf_file_as_the_same_signal_in_npz(tmp_path, himae, random_model_file):
    """The bundled record's PLETH and ECG leads written as EDF+ at their 250 Hz: `himae embed` gives the same
    windows, bit for bit, as for an NPZ of the signal pyedflib reads back."""
    rec = load(BUNDLED)
    assert rec.fs == 250
    edf = tmp_path / "a103l.edf"
    n = rec.signals.shape[1] // 250 * 250
    write(edf, {name: (250, np.nan_to_num(rec.signals[i, :n])) for i, name in enumerate(rec.channel_names)})
    pleth = rec.channel_names.index("PLETH")
    np.savez(tmp_path / "same.npz", signals=physical(edf, pleth)[None], fs=250.0, channel_names=["PLETH"])
    out = embed_each(himae, random_model_file("himae-25"), edf, tmp_path / "same.npz")
    assert len(out[1]["start"]) > 10
    for key in ("start", "level0", "level3", "lost_fraction"):
        assert np.array_equal(out[0][key], out[1][key]), key


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 4000), st.binary(min_size=1, max_size=8)), min_size=1, max_size=4),
       cut=st.integers(0, 64))
def test_any_edit_of_a_file_is_read_or_refused_as_a_recording_error(tmp_path, edits, cut):
    """Bytes overwritten anywhere (header, samples, annotations) and the end cut off: the file is read, or
    refused with a RecordingError, never another exception."""
    path = tmp_path / "edit.edf"
    if not path.exists():
        write(path, {"Pleth": (64, np.sin(np.arange(640) / 7.0) * 100), "Acc": (32, np.cos(np.arange(320) / 3.0))})
    rec = load_edited(tmp_path / "edited.edf", path.read_bytes(), edits, cut)
    assert rec is None or (rec.signals.ndim == 2 and rec.fs > 0)
    try:
        edf.read(tmp_path / "edited.edf", None, ["Pleth"])
    except edf.EdfError:
        pass
