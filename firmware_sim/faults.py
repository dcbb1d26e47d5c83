"""Seeded link faults: loss, burst loss, duplication, reordering, corruption, disconnects.

Faults act on transport units (one serial frame, one BLE notification) in
the order the device sends them; the same seed gives the same faults. The
disconnect window is in device time so it lands on the same samples at any
replay speed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from himae_stream.numbers import NON_NEGATIVE, PROBABILITY, Number

#: What each fault setting accepts; `himae sim` flags and `sim://` parameters of the same names read it.
NUMBERS: dict[str, Number] = {
    "loss": PROBABILITY, "burst": PROBABILITY, "burst_len": Number(low=1), "duplicate": PROBABILITY,
    "reorder": PROBABILITY, "corrupt": PROBABILITY, "disconnect_after": NON_NEGATIVE, "disconnect_for": NON_NEGATIVE,
}


@dataclass
class FaultConfig:
    loss: float = 0.0  # probability a unit is lost
    burst: float = 0.0  # probability a burst of losses starts at a unit
    burst_len: float = 5.0  # mean units lost per burst (geometric)
    duplicate: float = 0.0  # probability a unit is sent twice
    reorder: float = 0.0  # probability a unit is held back and sent after the next one
    corrupt: float = 0.0  # probability one byte of a unit is changed
    disconnect_after: float | None = None  # device seconds before the link drops
    disconnect_for: float = 5.0  # device seconds the link stays down
    seed: int = 1

    def __post_init__(self) -> None:
        for name, accepts in NUMBERS.items():
            if getattr(self, name) is not None:
                accepts.check(getattr(self, name), name)


class Fate(enum.Enum):
    SEND = "send"
    LOSE = "lose"
    DUPLICATE = "duplicate"
    REORDER = "reorder"
    CORRUPT = "corrupt"


class Faults:
    """Draws the fate of each unit from one seeded generator."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self.config = config or FaultConfig()
        self._rng = np.random.default_rng(self.config.seed)
        self._burst_left = 0

    def fate(self, allowed: frozenset[Fate] = frozenset(Fate)) -> Fate:
        """The fate of the next unit; fates outside `allowed` (what the transport can suffer) are never drawn."""
        c = self.config
        if self._burst_left > 0:
            self._burst_left -= 1
            return Fate.LOSE
        u = self._rng.random(5)
        if c.burst and u[0] < c.burst and Fate.LOSE in allowed:
            self._burst_left = int(self._rng.geometric(1.0 / c.burst_len)) - 1
            return Fate.LOSE
        for p, draw, fate in (
            (c.loss, u[1], Fate.LOSE),
            (c.corrupt, u[2], Fate.CORRUPT),
            (c.duplicate, u[3], Fate.DUPLICATE),
            (c.reorder, u[4], Fate.REORDER),
        ):
            if p and draw < p and fate in allowed:
                return fate
        return Fate.SEND

    def corrupt(self, unit: bytes, keep_nonzero: bool = True) -> bytes:
        """`unit` with one byte changed (never to 0x00 when `keep_nonzero`, so framing survives)."""
        data = bytearray(unit)
        i = int(self._rng.integers(len(data)))
        low = 1 if keep_nonzero else 0
        new = int(self._rng.integers(low, 256))
        if new == data[i]:
            new = new % 255 + 1 if keep_nonzero else (new + 1) % 256
        data[i] = new
        return bytes(data)

    def disconnected(self, device_s: float) -> bool:
        """Whether the link is down at device time `device_s`."""
        c = self.config
        if c.disconnect_after is None:
            return False
        return c.disconnect_after <= device_s < c.disconnect_after + c.disconnect_for
