"""Packet, info, notification, control and heart-rate codecs."""

import numpy as np
import pytest
from bumble.profiles.heart_rate_service import HeartRateService
from hypothesis import given, settings
from hypothesis import strategies as st

from himae_stream import protocol as P

FORMATS = list(P.SampleFormat)
LIMITS = {P.SampleFormat.INT16: 1 << 15, P.SampleFormat.INT24: 1 << 23}


@st.composite
def packets(draw, fmt=None, channels=None):
    fmt = fmt or draw(st.sampled_from(FORMATS))
    c = channels or draw(st.integers(1, 8))
    n = draw(st.integers(0, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if fmt == P.SampleFormat.FLOAT32:
        codes = rng.normal(0, 1e4, (c, n)).astype(np.float32)
    else:
        lim = LIMITS[fmt]
        codes = rng.integers(-lim, lim, (c, n)).astype(np.int32)
    scale = tuple(float(np.float32(s)) for s in draw(st.lists(
        st.floats(1e-6, 1e3, allow_nan=False), min_size=c, max_size=c)))
    return P.Packet(
        seq=draw(st.integers(0, 2**32 - 1)), t_us=draw(st.integers(0, 2**64 - 1)),
        fs=float(np.float32(draw(st.floats(0.5, 4000)))), samples=codes, scale=scale,
        fmt=fmt, stream_id=draw(st.integers(0, 255)),
    )


@given(packets())
def test_packet_round_trip_every_format(packet):
    decoded = P.decode_packet(P.encode_packet(packet))
    assert decoded == packet
    assert decoded.samples.shape == packet.samples.shape
    np.testing.assert_array_equal(decoded.physical(), packet.physical())


def test_int24_sign_extension_and_layout():
    codes = np.array([[-(1 << 23), -1, 0, 1, (1 << 23) - 1]], np.int32)
    packet = P.Packet(7, 1000, 100.0, codes, (1.0,), P.SampleFormat.INT24)
    body = P.encode_packet(packet)
    tail = body[P.DATA_HEADER_SIZE + 4 :]
    assert tail == bytes.fromhex("000080" "ffffff" "000000" "010000" "ffff7f")
    np.testing.assert_array_equal(P.decode_packet(body).samples, codes)


def test_samples_are_interleaved_on_the_wire():
    codes = np.array([[1, 2], [3, 4]], np.int32)  # channel 0: 1, 2; channel 1: 3, 4
    body = P.encode_packet(P.Packet(0, 0, 50.0, codes, (1.0, 1.0)))
    assert np.frombuffer(body[P.DATA_HEADER_SIZE + 8 :], "<i2").tolist() == [1, 3, 2, 4]


def test_from_physical_quantises_and_clips():
    values = np.array([[0.0, 1.5, -1.5, 1e9]])
    packet = P.Packet.from_physical(2**32 + 3, 5, 100.0, values, 0.5)
    assert packet.seq == 3
    assert packet.samples.tolist() == [[0, 3, -3, (1 << 15) - 1]]
    np.testing.assert_allclose(packet.physical()[0, :3], [0.0, 1.5, -1.5])


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_decoders_raise_only_protocol_error(data):
    for decode in (P.decode_packet, P.decode_info, P.decode_heart_rate, P.decode_control, P.body_kind):
        try:
            decode(data)
        except P.ProtocolError:
            pass


@given(packets(), st.data())
def test_corrupted_packet_bodies_raise_only_protocol_error(packet, data):
    body = bytearray(P.encode_packet(packet))
    i = data.draw(st.integers(0, len(body) - 1))
    body[i] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(body)))
    for candidate in (bytes(body), bytes(body[:cut])):
        try:
            P.decode_packet(candidate)
        except P.ProtocolError:
            pass


def test_malformed_bodies_are_named():
    good = P.encode_packet(P.Packet(0, 0, 100.0, np.zeros((1, 4), np.int32), (1.0,)))
    with pytest.raises(P.ProtocolError, match="version"):
        P.decode_packet(b"\x09" + good[1:])
    with pytest.raises(P.ProtocolError, match="format"):
        P.decode_packet(good[:3] + b"\x07" + good[4:])
    with pytest.raises(P.ProtocolError, match="header says"):
        P.decode_packet(good[:-1])
    with pytest.raises(P.ProtocolError, match="kind"):
        P.decode_info(good)


@given(
    st.lists(st.text(max_size=20), min_size=1, max_size=6).flatmap(
        lambda names: st.tuples(
            st.just(tuple(names)),
            st.lists(st.floats(1e-6, 1e3).map(lambda v: float(np.float32(v))),
                     min_size=len(names), max_size=len(names)).map(tuple),
            st.lists(st.text(max_size=8), min_size=len(names), max_size=len(names)).map(tuple),
        )
    ),
    st.sampled_from(FORMATS),
    st.text(max_size=30),
)
def test_info_round_trip(columns, fmt, device):
    names, scale, units = columns
    info = P.StreamInfo(125.0, names, scale, fmt, units, 2, device)
    assert P.decode_info(P.encode_info(info)) == info


def test_control_round_trip_and_errors():
    for cmd in (P.ControlCommand(P.ControlOp.START), P.ControlCommand(P.ControlOp.STOP),
                P.ControlCommand(P.ControlOp.SET_RATE, 64.0), P.ControlCommand(P.ControlOp.REQUEST_INFO)):
        assert P.decode_control(P.encode_control(cmd)) == cmd
    with pytest.raises(P.ProtocolError):
        P.decode_control(b"\x03\x00\x00\xc0\x7f")  # NaN rate
    with pytest.raises(P.ProtocolError):
        P.decode_control(b"\x01\x00")


# ----------------------------------------------------------- notifications
def _info(fmt, channels):
    return P.StreamInfo(100.0, tuple(f"c{i}" for i in range(channels)), (0.5,) * channels, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_default_mtu_carries_several_samples(fmt):
    info = _info(fmt, 1)
    plain = P.samples_per_notification(P.DEFAULT_ATT_PAYLOAD, info, sync=False)
    assert plain >= 4
    assert P.samples_per_notification(P.DEFAULT_ATT_PAYLOAD, info, sync=True) >= 1
    assert P.samples_per_notification(244, info, sync=False) > 10 * plain // 2


@settings(max_examples=60)
@given(st.data())
def test_notifications_rebuild_packets(data):
    fmt = data.draw(st.sampled_from(FORMATS))
    c = data.draw(st.integers(1, 3))
    payload = data.draw(st.sampled_from([20, 27, 64, 244]))
    info = _info(fmt, c)
    sync_interval = data.draw(st.integers(1, 8))
    if P.samples_per_notification(payload, info, sync=True) < 1:
        with pytest.raises(P.ProtocolError, match="sync header"):
            P.NotificationPacker(info, payload, sync_interval=sync_interval)
        return
    packer = P.NotificationPacker(info, payload, sync_interval=sync_interval)
    decoder = P.NotificationDecoder(info)
    seq = data.draw(st.integers(0, 2**32 - 1))
    t_us = data.draw(st.integers(0, 2**40))
    sent, got = [], []
    for _ in range(data.draw(st.integers(1, 6))):
        packet = data.draw(packets(fmt=fmt, channels=c))
        packet = P.Packet(seq, t_us, info.fs, packet.samples, info.scale, fmt)
        sent.append(packet)
        for note in packer.pack(packet):
            assert len(note) <= payload
            out = decoder.feed(note)
            if out is not None:
                got.append(out)
        seq = (seq + packet.n) % P.SEQ_MODULUS
        t_us += packet.n * 10_000
    expected = np.concatenate([p.samples for p in sent], axis=1)
    if expected.shape[1]:
        np.testing.assert_array_equal(np.concatenate([g.samples for g in got], axis=1), expected)
        index = sent[0].seq
        for g in got:  # every rebuilt packet has its full seq and device time
            assert g.seq == index % P.SEQ_MODULUS
            assert g.t_us == sent[0].t_us + (index - sent[0].seq) * 10_000
            index += g.n
    assert decoder.counters["malformed"] == decoder.counters["unsynced"] == 0


@pytest.mark.parametrize("fmt,channels", [(P.SampleFormat.FLOAT32, 2), (P.SampleFormat.FLOAT32, 3),
                                          (P.SampleFormat.INT24, 3)])
@pytest.mark.parametrize("sync_interval", [1, 16])
def test_packer_refuses_a_payload_whose_sync_notification_holds_no_sample(fmt, channels, sync_interval):
    # 20 bytes carry such a sample behind the short header but not behind the sync header:
    # packing used to loop for ever on the first (sync) notification.
    info = _info(fmt, channels)
    assert P.samples_per_notification(20, info, sync=False) >= 1
    with pytest.raises(P.ProtocolError, match="20 bytes cannot carry a sample"):
        P.NotificationPacker(info, 20, sync_interval=sync_interval)


def test_notifications_before_a_sync_are_counted_and_short_seq_wraps():
    info = _info(P.SampleFormat.INT16, 1)
    packer = P.NotificationPacker(info, 20, sync_interval=10_000)
    start = P.SEQ_MODULUS - 20
    notes = packer.pack(P.Packet(start, 0, 100.0, np.arange(2000, dtype=np.int32)[None], (0.5,)))
    late_joiner = P.NotificationDecoder(info)
    assert all(late_joiner.feed(n) is None for n in notes[1:])
    assert late_joiner.counters["unsynced"] == len(notes) - 1
    decoder = P.NotificationDecoder(info)
    rebuilt = [decoder.feed(n) for n in notes]
    assert [p.n for p in rebuilt[:3]] == [3, 9, 9]  # 20-byte payload: sync header, then short ones
    starts = start + np.concatenate([[0], np.cumsum([p.n for p in rebuilt])[:-1]])
    assert [p.seq for p in rebuilt] == [int(s) % P.SEQ_MODULUS for s in starts]
    assert [p.t_us for p in rebuilt] == [int(s - start) * 10_000 for s in starts]
    np.testing.assert_array_equal(np.concatenate([p.samples for p in rebuilt], 1)[0], np.arange(2000))


def test_notification_decoder_survives_garbage():
    info = _info(P.SampleFormat.INT24, 2)
    decoder = P.NotificationDecoder(info)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        decoder.feed(rng.integers(0, 256, rng.integers(0, 30)).astype(np.uint8).tobytes())
    assert decoder.counters["notifications"] == 2000


# ------------------------------------------------------------- heart rate
@settings(max_examples=200)
@given(
    bpm=st.integers(0, 0xFFFF),
    contact=st.none() | st.booleans(),
    energy=st.none() | st.integers(0, 0xFFFF),
    rr_ticks=st.none() | st.lists(st.integers(0, 0xFFFF), max_size=9),
)
def test_heart_rate_against_bumble(bpm, contact, energy, rr_ticks):
    rr = None if rr_ticks is None else [t / 1024 for t in rr_ticks]
    reference = HeartRateService.HeartRateMeasurement(
        heart_rate=bpm, sensor_contact_detected=contact, energy_expended=energy, rr_intervals=rr
    )
    ours = P.decode_heart_rate(bytes(reference))
    assert ours.bpm == bpm
    assert ours.contact is contact
    assert ours.energy_kj == energy
    assert ours.rr_s == tuple(rr or ())
    # and bumble reads back what our encoder writes
    back = HeartRateService.HeartRateMeasurement.from_bytes(P.encode_heart_rate(ours))
    assert (back.heart_rate, back.sensor_contact_detected, back.energy_expended) == (bpm, contact, energy)
    assert tuple(back.rr_intervals or ()) == tuple(rr or ())


def test_heart_rate_truncated_fields_raise():
    with pytest.raises(P.ProtocolError):
        P.decode_heart_rate(b"\x01\x50")  # uint16 flag, one byte
    with pytest.raises(P.ProtocolError):
        P.decode_heart_rate(b"\x10\x50\x00")  # odd RR bytes
    with pytest.raises(P.ProtocolError):
        P.decode_heart_rate(b"\x08\x50\x01")  # energy truncated
