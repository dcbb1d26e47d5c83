"""LSL transport: the simulated device as a Lab Streaming Layer outlet, paced at device rate.

The outlet (name `himae-sim`, type PPG, one channel per recording channel,
labelled with its name, at the nominal device rate) pushes each frame once
its last sample has been produced. Timestamps are the device clock placed on
this machine's `local_clock()` where the replay started, so at 1x they read
like a real LSL device's and at Nx they run ahead, as the recording's own time.

Like the serial device, sampling starts once a consumer is connected, and a
frame that finds none (while an inlet reconnects) is not pushed and is logged
`no_reader`; frames lost to seeded faults are logged `lost`. During a
disconnect the outlet is destroyed (it vanishes from the network) and made
again, under the same source id, when the link is back.
"""

from __future__ import annotations

import numpy as np

from firmware_sim.device import DeviceModel, ThreadedDevice, frames
from firmware_sim.faults import Fate, Faults
from himae_stream.lsl import load_pylsl

LSL_FATES = frozenset({Fate.SEND, Fate.LOSE})
STREAM_TYPE = "PPG"


class LslDevice(ThreadedDevice):
    """A simulated wearable publishing an LSL outlet; `start()` streams in a background thread."""

    transport = "lsl"

    def __init__(self, model: DeviceModel, faults: Faults | None = None, speed: float | None = 1.0,
                 frame_ms: float = 40.0) -> None:
        super().__init__(model, faults, speed, frame_ms)
        self.pylsl = load_pylsl(RuntimeError)
        self.name = model.config.name
        self.pushed = 0  # samples pushed to the outlet so far
        self.outlet = self._outlet()

    def _outlet(self):
        lsl = self.pylsl
        info = lsl.StreamInfo(self.name, STREAM_TYPE, self.model.channels, self.model.fs, lsl.cf_float32,
                              f"firmware-sim-{self.name}")
        channels = info.desc().append_child("channels")
        for label in self.model.info.channel_names:
            channels.append_child("channel").append_child_value("label", label).append_child_value("type", "PPG")
        return lsl.StreamOutlet(info)

    def close(self) -> None:
        self.stop()
        self.outlet = None

    def run(self) -> None:
        """Push frames until the recording ends (or forever when looping) or `close()`."""
        while not self.outlet.wait_for_consumers(0.05):
            if self._stop.is_set():
                return
        self.pacer.restart()
        origin = self.pylsl.local_clock() - self.model.config.start_us * 1e-6
        for _, stop, spans in frames(self.model, self.per_frame, self.faults.disconnected, self.log):
            if not self._wait(stop / self.model.fs):
                break
            self.produced = stop
            if not spans:
                if self.outlet is not None and self.faults.disconnected(stop / self.model.fs):
                    self.outlet = None  # the device went away: its stream vanishes
                continue
            if self.outlet is None:
                self.outlet = self._outlet()
            if not self.outlet.have_consumers():
                self._drop(spans, "no_reader")
            elif self.faults.fate(LSL_FATES) is Fate.LOSE:
                self._drop(spans, "lost")
            else:
                for a, b in spans:
                    stamps = origin + self.model.timestamps_us(a, b) * 1e-6
                    self.outlet.push_chunk(np.ascontiguousarray(self.model.values(a, b).T), stamps.tolist())
                    self.pushed += b - a
