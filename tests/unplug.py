"""A serial device unplugged mid-stream and plugged back under the same name, for reconnect tests."""

from __future__ import annotations

import asyncio
import os
import threading
import tty
from collections.abc import Callable
from pathlib import Path

from himae_stream.samplestream import SampleStream
from himae_stream.sources.serial import SerialSource


def plug(link: Path) -> int:
    """A fresh pseudo-terminal named `link` (a symlink, as /dev/serial/by-id/... is); its master."""
    master, slave = os.openpty()
    tty.setraw(slave)
    name = os.ttyname(slave)
    os.close(slave)  # the reader opens its own
    os.symlink(name, link.with_name("next"))
    os.replace(link.with_name("next"), link)
    return master


def read_across_unplug(source: SerialSource, link: Path, sent: bytes, at: int, end: int,
                       plugged_back: Callable[[int], None], timeout: float = 10.0):
    """Read `source` (a port at `link`) through a SampleStream once the device has `sent` its first
    bytes; once samples up to `at` have come, unplug the port and plug a new one under `link`,
    which `plugged_back(master)` feeds from a thread; stop once samples up to `end` have come.
    Returns (chunks, counters)."""
    first = plug(link)
    masters = []

    async def main():
        stream = SampleStream(source)
        await source.open()
        os.write(first, sent)
        chunks, writer = [], None
        async with asyncio.timeout(timeout):
            async for chunk in stream:
                chunks.append(chunk)
                if writer is None and chunk.start + len(chunk) == at:
                    os.close(first)  # unplugged
                    masters.append(plug(link))  # and back, sending on at once
                    writer = threading.Thread(target=plugged_back, args=(masters[0],), daemon=True)
                    writer.start()
                if chunk.start + len(chunk) == end:
                    break
        await source.close()
        return chunks, stream.counters

    try:
        return asyncio.run(main())
    finally:
        for fd in masters:
            os.close(fd)
