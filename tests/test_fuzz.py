"""Inputs the fuzzers (csrc/fuzz, docs/fuzzing.md) found, replayed through the Python side.

Every file in csrc/fuzz/regressions/TARGET is also replayed by csrc/fuzz/run.sh
under ASan/UBSan before each fuzzing run; here the same bytes go through the
binding: model files are loaded or refused with ModelFileError, byte streams
are decoded into frames without raising.
"""

from pathlib import Path

import numpy as np
import pytest
from readers import outcomes_of

from himae_stream import load_model
from himae_stream.errors import StreamStateError
from himae_stream.framing import FrameDecoder

FUZZ = Path(__file__).resolve().parents[1] / "csrc" / "fuzz"
MODEL_INPUTS = sorted((FUZZ / "regressions" / "modelfile").glob("*"))
FRAME_INPUTS = sorted((FUZZ / "regressions" / "frame").glob("*")) + sorted((FUZZ / "seeds" / "frame").glob("*"))


@pytest.mark.parametrize("path", MODEL_INPUTS, ids=lambda p: p.name)
def test_model_file_regressions_load_or_are_refused_cleanly(path):
    said = outcomes_of(path)
    assert said[0] == said[1]
    if said[0] is None:  # a model that loads runs in stream mode; its snapshot restores or is refused cleanly
        model = load_model(path)
        stream = model.stream(normalize=False)
        stream.push(np.linspace(-1, 1, 3 * model.config["window"]).reshape(1, -1).repeat(model.config["in_channels"], 0))
        try:
            model.stream_from(stream.snapshot()).flush()
        except StreamStateError as exc:
            assert "NaN or Inf" in str(exc)


def test_a_stream_overflowed_by_its_weights_is_not_restored():
    """Weights near float32's largest (3e38) overflow the activations: the state then holds Inf, and a snapshot
    of it is refused rather than resumed (the fuzzer's first find, against the harness's expectation)."""
    model = load_model(FUZZ / "regressions" / "modelfile" / "stream_state_overflow.himae")
    stream = model.stream(normalize=False)
    stream.push(np.ones((1, 200), np.float32))
    with pytest.raises(StreamStateError, match="stream state holds NaN or Inf"):
        model.stream_from(stream.snapshot())


@pytest.mark.parametrize("path", FRAME_INPUTS, ids=lambda p: p.name)
def test_frame_inputs_decode_without_raising(path):
    data = path.read_bytes()
    whole = FrameDecoder()
    bodies = whole.feed(data)
    split = FrameDecoder()  # the same bytes in pieces give the same frames
    pieces = [split.feed(data[i : i + 7]) for i in range(0, len(data), 7)]
    assert [b for piece in pieces for b in piece] == bodies
    assert whole.counters["frames"] == len(bodies)
