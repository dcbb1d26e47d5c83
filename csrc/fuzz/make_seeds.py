"""Write the frame fuzzer's seeds (csrc/fuzz/seeds/frame): serial byte streams of real packets.

    python csrc/fuzz/make_seeds.py

The model file fuzzer's seeds are tests/corpus/*.himae (tests/corpus/make_corpus.py).
"""

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from himae_stream.framing import encode_frame  # noqa: E402
from himae_stream.protocol import Packet, SampleFormat, StreamInfo, encode_info, encode_packet  # noqa: E402


def seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    packets = [encode_packet(Packet(seq=4 * i, t_us=40_000 * i, fs=100.0, samples=codes.astype(dtype), scale=(0.01,) * c,
                                    fmt=fmt))
               for i, (c, fmt, dtype) in enumerate([(1, SampleFormat.INT16, np.int16), (3, SampleFormat.FLOAT32, np.float32)])
               for codes in [rng.integers(-3000, 3000, (c, 4))]]
    info = encode_info(StreamInfo(fs=100.0, channel_names=("PPG",), scale=(0.01,), device="sim"))
    frames = [encode_frame(body) for body in [*packets, info]]
    return {
        "packets.bin": b"".join(frames),
        "garbage_then_packet.bin": bytes(rng.integers(0, 256, 40, dtype=np.uint8)) + b"\0" + frames[0],
        "long_body.bin": encode_frame(bytes(range(256)) * 3),
        "empty_frames.bin": b"\0\0" + frames[1] + b"\0",
    }


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "seeds" / "frame"
    out.mkdir(parents=True, exist_ok=True)
    for name, data in seeds().items():
        (out / name).write_bytes(data)
