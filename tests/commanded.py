"""What the tests of sensors that stream only when told (a BITalino, a Shimmer3) share: a port where
nothing answers, reading a started reader, a source closed mid-stream, what `himae sim` announces, and
the check of delivered chunks against the simulated sensor's drop log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import tty

import numpy as np
import serial

from himae_stream.samplestream import SampleStream
from himae_stream.sources.serial import SerialSource
from himae_stream.urls import open_source
from test_sim_serial import check_indices


def open_port(path: str):
    return serial.serial_for_url(path, baudrate=115200, timeout=0.05)


@contextlib.contextmanager
def silent_port():
    """A pseudo-terminal's path where no device answers."""
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.close(slave)
    try:
        yield path
    finally:
        os.close(master)


def no_answer(reader) -> str:
    """The error a reader's `start` gives on a port where no device answers, the port's path as PORT."""
    from himae_stream.sources.base import SourceError

    with silent_port() as path:
        port = open_port(path)
        try:
            reader.start(port)
        except SourceError as exc:
            return str(exc).replace(path, "PORT")
        finally:
            port.close()
    raise AssertionError("started on a port where nothing answers")


def take(port, reader, frames: int, deadline_s: float = 10.0) -> list:
    """Read `port` into a started `reader` until it has delivered `frames` frames in all; its packets."""
    packets, deadline = [], time.monotonic() + deadline_s
    while reader.counters["frames"] < frames:
        assert time.monotonic() < deadline, f"{reader.counters['frames']} frames of {frames} came"
        packets += reader.feed(port.read(max(1, port.in_waiting)))
    return packets


def dropped_and_started_again(device, reader, before: int = 50, after: int = 100):
    """Start `reader` on the running `device` and read `before` frames; drop the link (close the port: the
    device goes idle); open the port again, start again and read to `after` frames in all. Returns the port,
    still open, and the packets before and after the drop."""
    port = open_port(device.path)
    reader.start(port)
    first = take(port, reader, before)
    port.close()
    assert device.idle.wait(5), "the device did not see its host go"
    port = open_port(device.path)
    reader.start(port)
    return port, first, take(port, reader, after)


def across_a_lost_link(folder, make_device, reader, before: int = 50, after: int = 100):
    """Read a device through a SerialSource at `folder/port` (a link, as /dev/rfcomm0 stands for a Bluetooth
    device) until `before` frames came; then the device goes (its port hangs up) and another made by
    `make_device` answers at the link, as the sensor does once the link is back; read until `after` frames
    came from it. Returns (the chunks, the stream's counters, the second device)."""
    link = folder / "port"
    first = make_device()
    first.start()
    os.symlink(first.path, link)
    source = SerialSource(str(link), idle_timeout_s=5.0, reconnect_timeout_s=10.0, reader=reader)
    second = None

    async def main():
        nonlocal second
        stream, chunks = SampleStream(source), []
        async for chunk in stream:
            chunks.append(chunk)
            if second is None and source.counters["frames"] >= before:
                second = make_device()
                second.start()
                os.symlink(second.path, folder / "next")
                os.replace(folder / "next", link)
                first.close()  # the link drops
                done = source.counters["frames"] + after
            if second is not None and source.counters["frames"] >= done:
                await source.close()
        return chunks, stream.counters

    try:
        chunks, counters = asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        first.close()
        if second is not None:
            second.close()
    return chunks, counters, second


def close_mid_stream(device, reader) -> None:
    """Read the started `device` through a SerialSource with `reader` and close the source after 20 frames;
    returns once the device is idle again."""
    source = SerialSource(device.path, idle_timeout_s=None, reader=reader)

    async def main():
        async for _ in source:
            if source.counters["frames"] >= 20:
                await source.close()

    asyncio.run(asyncio.wait_for(main(), 30))
    assert device.idle.wait(5), "the sensor did not stop"


def announced(sim) -> dict[str, str]:
    """What `himae sim` (a Popen with text stdout) announces, up to where to connect (`source`)."""
    said = {}
    for line in sim.stdout:
        key, _, value = line.partition(": ")
        said[key] = value.strip()
        if key == "source":
            return said
    raise AssertionError(f"the simulator did not announce its port: {sim.stderr.read()}")


def run_beside_framed(himae, folder, sim_args: list[str], run_args: list[str]):
    """`himae run` of 14 s of the bundled record from `himae sim --device ... <sim_args>` in another process
    (with `run_args`), and of the same seconds replayed over the framed protocol: what the simulator
    announced, both runs' records, checked to be the same windows with nothing lost, and the summary
    `himae run` ended the device's run with."""
    from conftest import BUNDLED

    sim = subprocess.Popen([sys.executable, "-m", "himae_stream.cli", "sim", *sim_args, "--recording", str(BUNDLED),
                            "--duration", "14", "--speed", "max", "--linger", "60"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        said = announced(sim)
        got = himae("run", said["source"], *run_args, "--duration", "14s", "--sink", str(folder / "got.jsonl"),
                    timeout=120)
    finally:
        sim.kill()
        sim.wait()
    want = himae("run", f"sim://{BUNDLED}?channels=PLETH&speed=max&duration=14", "--duration", "14s",
                 "--sink", str(folder / "want.jsonl"), timeout=120)
    assert got.returncode == 0 and want.returncode == 0, got.stderr + want.stderr
    summary = got.stderr.strip().splitlines()[-1]
    got, want = ([json.loads(line) for line in open(folder / name)] for name in ("got.jsonl", "want.jsonl"))
    assert len(got) == len(want) == 7 and all(r["lost_fraction"] == 0 for r in got)
    assert [(g["start"], g["end"]) for g in got] == [(w["start"], w["end"]) for w in want]
    return said, got, want, summary


def check(chunks, device, values) -> np.ndarray:
    """Every index once and in order from the first delivered, lost exactly where the device's drop log says,
    `values(start, stop)` (its codes) elsewhere; returns the lost mask. (A reader takes frames once it has
    found their boundaries: a frame lost among the first few leaves those before it untaken, and the
    stream starts at the first frame taken, its index the sensor's count.)"""
    first = chunks[0].start
    assert first < 16, first
    return check_indices(chunks, values, device.log.indices(), first)[0]


def sim_chunks(url: str):
    """The chunks and counters of a `sim://` URL read to its end, and its source."""
    source = open_source(url)

    async def main():
        stream = SampleStream(source)
        return [chunk async for chunk in stream], stream.counters

    chunks, counters = asyncio.run(asyncio.wait_for(main(), 60))
    return chunks, counters, source
