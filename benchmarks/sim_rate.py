"""How fast the firmware simulator's transports carry samples, and how true its 1× clock is.

    python -m benchmarks.sim_rate [--recording PATH --channels PLETH] [--realtime 60]

Unpaced (speed max), each transport streams the recording into the runtime's
own reader (SerialSource or BleSource → SampleStream) and reports samples/s
received. In one process the simulated radio, both BLE host stacks and the
reader share one event loop and nothing throttles the device, so BleSource
gets a queue that holds the whole replay (its default would overflow, counted). With `--realtime S` it also replays S seconds at 1× over serial and
BLE at once and reports the replay's wall duration and the receive rate
against the device rate (target: S ± 1 %).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

from bumble.link import LocalLink

from firmware_sim.ble_device import BleDevice
from firmware_sim.device import DeviceModel
from firmware_sim.serial_device import SerialDevice
from himae_stream.bumble_backend import BumbleBackend
from himae_stream.recordings import load
from himae_stream.samplestream import SampleStream
from himae_stream.sources.ble import BleSource
from himae_stream.sources.serial import SerialSource

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECORDING = REPO.parent / "shared" / "data" / "physionet" / "a103l"
WHOLE_REPLAY = 1 << 17  # notifications BleSource may queue


class Arrivals:
    """Samples received and the host times of the first and last arrival."""

    def __init__(self) -> None:
        self.samples = 0
        self.first_n = 0  # samples of the first arrival: the rate counts those after it
        self.first = self.last = None

    def add(self, n: int) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first, self.first_n = now, n
        self.last = now
        self.samples += n


async def receive(source, arrivals: Arrivals, finished, grace_s: float = 0.7) -> None:
    """Count delivered samples until `finished()` and quiet for `grace_s`."""

    async def consume():
        async for chunk in SampleStream(source):
            arrivals.add(int((~chunk.lost_mask).sum()))

    task = asyncio.create_task(consume())
    seen = -1
    while not (finished() and arrivals.samples == seen):
        if task.done():
            task.result()
            return
        seen = arrivals.samples if finished() else -1
        await asyncio.sleep(grace_s)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def serial_run(model: DeviceModel, speed: float | None) -> tuple[Arrivals, float]:
    """Arrivals over a pty, and the replay's wall duration (sample clock start → last frame written)."""
    device = SerialDevice(model, speed=speed)
    arrivals = Arrivals()
    device.start()
    await receive(SerialSource(device.path, idle_timeout_s=None), arrivals, lambda: device.wait(0))
    device.close()
    return arrivals, device.finished_at - device.pacer.t0


async def ble_run(model: DeviceModel, speed: float | None, mtu: int) -> tuple[Arrivals, float]:
    link = LocalLink()
    device = BleDevice(model, link, speed=speed, mtu=mtu)
    await device.start()
    arrivals = Arrivals()
    done_at = []
    device_done = asyncio.create_task(device.finished.wait())
    device_done.add_done_callback(lambda _: done_at.append(time.monotonic()))
    source = BleSource(name=device.name, backend=BumbleBackend.bound(link), queue_size=WHOLE_REPLAY)
    await receive(source, arrivals, device.finished.is_set)
    await device.stop()
    return arrivals, done_at[0] - device.pacer.t0


def ble_two_processes(recording: Path, channels: str, mtu: int) -> Arrivals:
    command = [sys.executable, "-m", "himae_stream", "sim", "--transport", "ble", "--recording", str(recording),
               "--channels", channels, "--speed", "max", "--mtu", str(mtu), "--linger", "60"]
    sim = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        spec = [sim.stdout.readline() for _ in range(3)][1].strip().partition("=")[2]  # ble:, HCI, source: lines

        async def main():
            done = asyncio.get_running_loop().run_in_executor(None, sim.stdout.readline)
            arrivals = Arrivals()
            source = BleSource(name="himae-sim", backend=BumbleBackend.bound(spec), queue_size=WHOLE_REPLAY)
            await receive(source, arrivals, done.done)
            return arrivals

        return asyncio.run(main())
    finally:
        sim.kill()
        sim.wait()


def rate(arrivals: Arrivals) -> float:
    return (arrivals.samples - arrivals.first_n) / max(arrivals.last - arrivals.first, 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recording", type=Path, default=DEFAULT_RECORDING)
    parser.add_argument("--channels", default="PLETH")
    parser.add_argument("--realtime", type=float, default=0.0, help="also replay this many seconds at 1x")
    args = parser.parse_args(argv)
    recording = load(args.recording, channels=args.channels)
    model = DeviceModel(recording)
    print(f"recording {recording.name} {args.channels}: {model.length} samples at {model.fs:g} Hz "
          f"({model.length / model.fs:.0f} s), int16")
    print("max speed, samples/s delivered by SampleStream:")
    arrivals, _ = asyncio.run(serial_run(model, None))
    print(f"  serial pty            {rate(arrivals):12,.0f}  ({arrivals.samples} samples)")
    for mtu in (23, 247):
        arrivals, _ = asyncio.run(ble_run(model, None, mtu))
        print(f"  BLE 1 process MTU {mtu:<3} {rate(arrivals):12,.0f}  ({arrivals.samples} samples)")
    arrivals = ble_two_processes(args.recording, args.channels, 247)
    print(f"  BLE 2 processes MTU 247 {rate(arrivals):10,.0f}  ({arrivals.samples} samples)")

    if args.realtime > 0:
        short = DeviceModel(dataclasses.replace(recording, signals=recording.signals[:, : int(args.realtime * recording.fs)]))

        async def both():
            return await asyncio.gather(serial_run(short, 1.0), ble_run(short, 1.0, 247))

        print(f"1x replay of {args.realtime:g} s (serial and BLE at once):")
        for name, (arrivals, duration) in zip(("serial", "BLE"), asyncio.run(both())):
            print(f"  {name:6} replay {duration:8.3f} s ({100 * (duration / args.realtime - 1):+.2f} %), "
                  f"receive rate {rate(arrivals):8.2f}/s vs device {short.fs:g}/s "
                  f"({100 * (rate(arrivals) / short.fs - 1):+.2f} %), {arrivals.samples} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
