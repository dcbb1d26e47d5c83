"""Decode throughput: serial frame bytes to SampleStream chunks on one core.

Counts samples as channel values (and sample frames: one value per channel)
per CPU-second of one core through the whole receive path: COBS/CRC deframing, packet decoding and
SampleStream ordering, timing and unit conversion. Run:

    python -m benchmarks.decode [--seconds 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from himae_stream.framing import FrameDecoder, encode_frame
from himae_stream.protocol import Kind, Packet, SampleFormat, body_kind, decode_packet, encode_packet
from himae_stream.samplestream import SampleStream

CASES = [  # (label, channels, samples per packet, format)
    ("PPG 1ch x 25 int16", 1, 25, SampleFormat.INT16),
    ("PPG+ACC 4ch x 32 int16", 4, 32, SampleFormat.INT16),
    ("6ch x 64 int24", 6, 64, SampleFormat.INT24),
    ("8ch x 128 float32", 8, 128, SampleFormat.FLOAT32),
]


def capture(channels: int, n: int, fmt: SampleFormat, packets: int = 2000) -> bytes:
    rng = np.random.default_rng(0)
    values = rng.normal(0, 100, (channels, n * packets))
    frames = [
        encode_frame(encode_packet(Packet.from_physical(
            k * n, round(k * n * 1e4), 100.0, values[:, k * n : (k + 1) * n], 0.01, fmt)))
        for k in range(packets)
    ]
    return b"".join(frames)


def run_once(data: bytes, block: int = 4096) -> int:
    """Receive `data` in serial-read-sized blocks; returns sample frames delivered."""
    decoder = FrameDecoder()
    stream = SampleStream()
    delivered = 0
    host = 0.0
    for i in range(0, len(data), block):
        host += 0.001
        packets = [decode_packet(b) for b in decoder.feed(data[i : i + block]) if body_kind(b) == Kind.DATA]
        for chunk in stream.push_many(packets, host):
            delivered += len(chunk)
    for chunk in stream.flush():
        delivered += len(chunk)
    return delivered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per case")
    args = parser.parse_args()
    print("rates per CPU-second of this process (wall-clock rate in brackets, lower on a busy machine)")
    for label, channels, n, fmt in CASES:
        data = capture(channels, n, fmt)
        run_once(data)  # warm up
        frames, cpu, wall = 0, 0.0, 0.0
        while wall < args.seconds:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            frames += run_once(data)
            cpu += time.process_time() - cpu0
            wall += time.perf_counter() - wall0
        print(
            f"{label:24s} {frames * channels / cpu / 1e6:6.2f} M samples/s [{frames * channels / wall / 1e6:5.2f}]"
            f"  {frames / cpu / 1e6:5.2f} M frames/s  {len(data) * frames / (2000 * n) / cpu / 1e6:6.1f} MB/s"
        )


if __name__ == "__main__":
    main()
