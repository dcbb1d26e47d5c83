"""Numbers given as command-line options or URL parameters: what each accepts, and one parser.

Every numeric option says what it accepts with a `Number` (`SPEED`,
`PROBABILITY`, ...), and `Number.parse(text, name)` is the one place that
turns text into a value, so `--speed fast`, `?loss=2` and `--baud 9k6` all
fail the same way, on one line: "NAME: expected WHAT, got 'TEXT'". A
`Number` is also an argparse `type`, and `check` applies the same bounds to
a value that came from Python rather than from text.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from himae_stream.errors import HimaeError


class OptionError(HimaeError, ValueError):
    """A numeric option or URL parameter that is not what it accepts."""


@dataclass(frozen=True)
class Number:
    """The numbers an option accepts: integer or not, bounds, and words that stand for a value."""

    integer: bool = False
    low: float | None = None
    above: bool = False  # `low` itself is refused (> low rather than >= low)
    high: float | None = None
    words: tuple[tuple[str, object], ...] = ()  # e.g. (("max", None),)

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            kind += f" > {self.low:g} and <= {self.high:g}" if self.above else f" from {self.low:g} to {self.high:g}"
        elif self.low is not None:
            kind += f" {'>' if self.above else '>='} {self.low:g}"
        elif self.high is not None:
            kind += f" <= {self.high:g}"
        return " or ".join([kind, *(repr(word) for word, _ in self.words)])

    def parse(self, text, name: str):
        """The value `text` stands for; `OptionError` naming `name` and what it accepts otherwise."""
        word = str(text).strip().lower()
        for candidate, value in self.words:
            if word == candidate:
                return value
        try:
            value = int(word) if self.integer else float(word)
        except ValueError:
            raise self.error(name, text) from None
        return self.check(value, name, text)

    def check(self, value, name: str, text=None):
        """`value` if it is within bounds (and finite), else `OptionError`."""
        inside = math.isfinite(value) and (
            self.low is None or value > self.low or (value == self.low and not self.above)
        ) and (self.high is None or value <= self.high)
        if not inside:
            raise self.error(name, value if text is None else text)
        return value

    def expected(self, got) -> str:
        return f"expected {self}, got {str(got)!r}"

    def error(self, name: str, got) -> OptionError:
        return OptionError(f"{name}: {self.expected(got)}")

    def __call__(self, text: str):
        """As an argparse `type`: argparse puts the flag's name in front of the message."""
        try:
            return self.parse(text, "")
        except OptionError:
            raise argparse.ArgumentTypeError(self.expected(text)) from None


ANY = Number()
POSITIVE = Number(low=0, above=True)
NON_NEGATIVE = Number(low=0)
PROBABILITY = Number(low=0, high=1)
COUNT = Number(integer=True, low=0)
POSITIVE_INTEGER = Number(integer=True, low=1)
#: A sample rate in Hz: wearable signals are sampled far below 10 kHz, and a recording
#: resampled to a higher rate only wastes memory (an absurd rate used to run out of it).
SAMPLE_RATE = Number(low=0, above=True, high=10_000)
SPEED = Number(low=0, above=True, words=(("max", None),))  # None: as fast as the transport takes
