"""Waiting in tests: on events, with deadlines, never on sleeps or settle times.

`Changes` is the asyncio side: whatever alters what a test waits on (a
notification callback, a source passing a batch on, a device's event) calls
`changed()`, and `until(condition, timeout)` re-checks the condition on each
change, failing with an AssertionError once `timeout` has passed. The
deadline only bounds a wait for something that must happen; it is never how
a test decides that something has happened.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from himae_stream.sources.base import Source


class Changes:
    """A change signal for one event loop; `until` waits for a condition to hold."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def changed(self, *_: Any) -> None:
        """Wake the waiters to re-check (usable as any callback: arguments are ignored)."""
        self._event.set()
        self._event = asyncio.Event()

    def follow(self, *signals: asyncio.Event | asyncio.Future) -> None:
        """Signal a change when each asyncio.Event is set or future done (e.g. a device's `finished`)."""
        for signal in signals:
            if isinstance(signal, asyncio.Event):
                task = asyncio.ensure_future(signal.wait())
                task.add_done_callback(self.changed)
            else:
                signal.add_done_callback(self.changed)

    async def until(self, condition: Callable[[], bool], timeout: float, what: str | Callable[[], str]) -> None:
        """Return once `condition()` holds, re-checking after each change; fail after `timeout` s."""
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    await self._event.wait()
        except TimeoutError:
            detail = what() if callable(what) else what
            raise AssertionError(f"waited {timeout:g} s for {detail}") from None


def happened(signal: asyncio.Event | asyncio.Future) -> bool:
    """Whether an asyncio.Event is set or a future done."""
    return signal.is_set() if isinstance(signal, asyncio.Event) else signal.done()


async def within(awaitable: Awaitable, timeout: float, what: str):
    """`await awaitable`, failing the test with `what` after `timeout` s."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise AssertionError(f"waited {timeout:g} s for {what}") from None


def in_thread(wait: Callable[[float], bool], timeout: float, what: str) -> asyncio.Future:
    """A future, done once the blocking `wait(timeout)` (e.g. `SerialDevice.wait`) returns True;
    it fails the test when `wait` reports that `timeout` passed first."""

    def run() -> None:
        if not wait(timeout):
            raise AssertionError(f"waited {timeout:g} s for {what}")

    return asyncio.get_running_loop().run_in_executor(None, run)


def wait_event(event: threading.Event, timeout: float, what: str) -> None:
    """Block a thread until `event` is set; fail after `timeout` s."""
    if not event.wait(timeout):
        raise AssertionError(f"waited {timeout:g} s for {what}")


class Tap(Source):
    """Passes a source's arrivals through unchanged, keeping a copy of the packets and
    signalling `changes` at each one (so a test can wait on what the source has received)."""

    def __init__(self, inner: Source, changes: Changes | None = None):
        super().__init__()
        self.inner = inner
        self.counters = inner.counters
        self.changes = changes
        self.packets = []

    async def __aiter__(self):
        async for received in self.inner:
            self.packets.extend(received.packets)
            self.info = self.inner.info
            if self.changes is not None:
                self.changes.changed()
            yield received

    async def close(self):
        await self.inner.close()


async def read_all(source: Source, done: list, sent: Callable[[], int], received: Callable[[], int],
                   timeout_s: float, what: str):
    """Read `source` through a SampleStream until each of `done` (events or futures) happened and
    `received()` reached `sent()`; then close the source, and the stream, its source ended, releases
    all it still holds. Returns (stream, tap, chunks)."""
    from himae_stream.samplestream import SampleStream

    changes = Changes()
    changes.follow(*done)
    tap = Tap(source, changes)
    stream = SampleStream(tap)
    chunks = []

    async def consume():
        async for chunk in stream:
            chunks.append(chunk)

    task = asyncio.create_task(consume())
    task.add_done_callback(changes.changed)
    await changes.until(lambda: task.done() or all(map(happened, done)) and received() >= sent(),
                        timeout_s, lambda: f"{what} ({sent()}) to be read: {stream.counters}")
    for signal in done:
        if isinstance(signal, asyncio.Future):
            signal.result()  # a failure of the device is raised here
    assert not task.done(), task.exception()  # the stream must not end before the source is closed
    await tap.close()
    await within(task, timeout_s, "the stream to end once its source is closed")
    return stream, tap, chunks
