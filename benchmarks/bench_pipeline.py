"""End to end: the firmware simulator replays a real recording into `himae run`'s pipeline.

The simulator sends the bundled PhysioNet record a103l (finger PPG, resampled
to 100 Hz) as serial frames over a pseudo-terminal; the runtime's reader,
SampleStream, the stream normaliser, stream mode, probes and imputation turn
it into window records (hop 1 s) on the himae-100 model with the best ISA.
"""

import time
from pathlib import Path

import numpy as np

import himae_stream
from benchmarks.workload import available_isas, load, model_path
from himae_stream.pipeline import run_blocking

RECORDING = Path(himae_stream.__file__).parent / "data" / "a103l.hea"
FS = 100
BAUD = 100_000_000  # so the serial link does not limit the replay


class SimulatorReplay:
    """Latency per window record and throughput of the whole pipeline."""

    timeout = 120

    def setup(self) -> None:
        isas = available_isas()
        if not isas:
            raise NotImplementedError("the C core is not built")
        self.model = load(model_path("himae-100"), isas[-1])  # listed from scalar up: the last is the best

    def replay(self, seconds: int, speed: str) -> tuple[list[dict], list[float]]:
        """The window records of a replay, and when each arrived (perf_counter seconds)."""
        url = f"sim://{RECORDING}?channels=PLETH&fs={FS}&duration={seconds}&speed={speed}&baud={BAUD}"
        records, arrived = [], []
        for record in run_blocking(url, model=self.model, hop="1s"):
            records.append(record)
            arrived.append(time.perf_counter())
        return records, arrived

    def track_p99_window_latency(self) -> float:
        """p99 from the serial read that completes a window to its record, replayed at 20x."""
        records, _ = self.replay(60, "20")
        return float(np.percentile([r["latency_ms"] for r in records], 99)) * 1e3

    track_p99_window_latency.unit = "µs"

    def track_realtime_factor(self) -> float:
        """Seconds of signal per second of wall time, replayed as fast as it goes (start-up and end excluded)."""
        records, arrived = self.replay(300, "max")
        if len(records) < 100:
            raise RuntimeError(f"the replay produced {len(records)} window records, expected about 290")
        signal_s = (records[-1]["end"] - records[0]["end"]) / FS
        return signal_s / (arrived[-1] - arrived[0])

    track_realtime_factor.unit = "x real time"
