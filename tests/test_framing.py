"""COBS + CRC32 serial framing: round trips, garbage, bounded memory."""

import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from himae_stream.framing import FrameDecoder, cobs_decode, cobs_encode, encode_frame

bodies = st.binary(min_size=1, max_size=700)


@settings(deadline=None)  # the first call compiles the COBS kernels
@given(st.binary(max_size=2000))
def test_cobs_round_trip_has_no_zero(data):
    encoded = cobs_encode(data)
    assert b"\x00" not in encoded
    assert len(encoded) <= len(data) + len(data) // 254 + 1
    assert cobs_decode(encoded) == data


def test_frame_layout():
    body = b"\x01\x00\x02"
    frame = encode_frame(body)
    assert frame.endswith(b"\x00") and frame.count(0) == 1
    assert cobs_decode(frame[:-1]) == body + zlib.crc32(body).to_bytes(4, "little")


@settings(deadline=None)
@given(st.lists(bodies, max_size=20), st.data())
def test_frames_survive_any_split(frames, data):
    stream = b"".join(encode_frame(b) for b in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder()
    out = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        out += decoder.feed(stream[a:b])
    assert out == frames
    assert decoder.counters["frames"] == len(frames)
    assert decoder.counters["resyncs"] == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=40), bodies), max_size=15))
def test_garbage_between_frames_resynchronises(items):
    """A frame is lost only when garbage runs straight into it (no 0x00 in
    between); every other frame is delivered, in order, and no frame is made up."""
    decoder = FrameDecoder()
    stream = bytearray()
    expected = []
    for garbage, body in items:
        stream += garbage
        stream += encode_frame(body)
        if not garbage or garbage.endswith(b"\x00"):
            expected.append(body)
    assert decoder.feed(bytes(stream)) == expected
    lost = len(items) - len(expected)
    c = decoder.counters
    assert c["frames"] == len(expected)
    # every damaged run is counted once, as CRC or COBS failure
    assert c["crc_errors"] + c["decode_errors"] >= lost
    assert c["resyncs"] == c["crc_errors"] + c["decode_errors"] + c["oversize"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes_never_raise(data):
    decoder = FrameDecoder(max_body=256)
    for i in range(0, len(data), 97):
        decoder.feed(data[i : i + 97])
    assert decoder.counters["bytes"] == len(data)


def test_single_bit_errors_are_caught_by_crc():
    body = bytes(range(1, 200))
    frame = bytearray(encode_frame(body))
    for i in range(len(frame) - 1):
        for bit in range(8):
            bad = bytearray(frame)
            bad[i] ^= 1 << bit
            assert FrameDecoder().feed(bytes(bad) + encode_frame(b"ok")) == [b"ok"]


def test_oversize_garbage_is_bounded_and_recovers():
    decoder = FrameDecoder(max_body=100)
    for _ in range(50):
        assert decoder.feed(b"\x05" * 1000) == []
        assert decoder.held <= decoder.max_frame
    assert decoder.counters["oversize"] == 1
    assert decoder.feed(b"\x00" + encode_frame(b"next")) == [b"next"]
