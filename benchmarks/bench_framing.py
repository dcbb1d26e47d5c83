"""Serial framing: 10 s of 100 Hz PPG as COBS frames, back to packets."""

import time

from benchmarks.workload import signal
from himae_stream import framing, protocol

FS = 100.0
SECONDS = 10


class FrameDecode:
    """`FrameDecoder.feed` on the whole byte stream, then `decode_packet` on every body."""

    params = [10, 100]
    param_names = ["samples_per_packet"]

    def setup(self, per_packet: int) -> None:
        x = signal(int(FS * SECONDS), FS)
        frames = [
            framing.encode_frame(protocol.encode_packet(
                protocol.Packet.from_physical(i, int(i * 1e6 / FS), FS, x[:, i:i + per_packet], 1 / 32768)))
            for i in range(0, x.shape[1], per_packet)
        ]
        self.data = b"".join(frames)
        self.samples = x.shape[1]

    def decode(self) -> int:
        bodies = framing.FrameDecoder().feed(self.data)
        return sum(protocol.decode_packet(body).n for body in bodies)

    def time_decode(self, per_packet: int) -> None:
        self.decode()

    def track_samples_per_s(self, per_packet: int) -> float:
        start = time.perf_counter()
        decoded = self.decode()
        if decoded != self.samples:
            raise RuntimeError(f"decoded {decoded} of {self.samples} samples")
        return decoded / (time.perf_counter() - start)

    track_samples_per_s.unit = "samples/s"
