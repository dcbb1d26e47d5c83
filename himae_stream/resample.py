"""Streaming rational resampling, so a device at any rate feeds a model at its own rate.

A causal polyphase FIR (Kaiser-windowed sinc, cut-off at the lower Nyquist)
applied chunk by chunk: the output for any chunking is identical to one pass
over the whole stream. An output sample is lost when any input sample under
its filter taps was lost; output times are the input times interpolated at
the filter's group delay, so timestamps stay true.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from himae_stream._core import polyphase_fir

#: taps per output phase: short enough to keep gaps from spreading far, long
#: enough for about 40 dB of anti-alias rejection
TAPS_PER_PHASE = 8


class StreamResampler:
    """Resample `(channels, n)` chunks from `fs_in` to `fs_out` with fixed memory."""

    def __init__(self, fs_in: float, fs_out: float, channels: int):
        ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
        self.up, self.down = ratio.numerator, ratio.denominator
        self.fs_in, self.fs_out, self.channels = float(fs_in), float(fs_out), channels
        self.taps = TAPS_PER_PHASE * max(self.up, self.down) // self.up * self.up
        cutoff = 1.0 / max(self.up, self.down)  # of the upsampled Nyquist
        n = np.arange(self.taps) - (self.taps - 1) / 2
        h = cutoff * np.sinc(cutoff * n) * np.kaiser(self.taps, 5.0)
        h *= self.up / h.sum()  # unit gain at DC after zero-stuffing
        # phase p, tap t: h[p + t·up] multiplies input i0 - t, where i0 = floor(j·down / up)
        self.per_phase = self.taps // self.up
        self.bank = h.reshape(self.per_phase, self.up).T.copy()
        self.delay_in = (self.taps - 1) / 2 / self.up  # group delay, input samples
        self.reset()

    def reset(self) -> None:
        self.n_in = 0
        self.n_out = 0
        self.hist = np.zeros((self.channels, 0), np.float64)
        self.hist_lost = np.zeros(0, bool)
        self.hist_times = np.zeros(0, np.float64)

    def push(self, samples: np.ndarray, lost: np.ndarray, times: np.ndarray):
        """Resample one chunk; returns `(samples, lost, times)` of the outputs it completes."""
        samples = np.asarray(samples, np.float64)
        if self.n_in == 0 and samples.shape[1]:
            # start as if the first sample had always been there: no step transient
            first = samples[:, :1]
            self.hist = np.repeat(first, self.per_phase, axis=1)
            self.hist_lost = np.zeros(self.per_phase, bool)
            self.hist_times = times[0] - np.arange(self.per_phase, 0, -1) / self.fs_in
        x = np.concatenate([self.hist, samples], axis=1)
        xl = np.concatenate([self.hist_lost, np.asarray(lost, bool)])
        xt = np.concatenate([self.hist_times, times])
        base = self.n_in - self.hist.shape[1]  # absolute input index of x[:, 0]
        self.n_in += samples.shape[1]
        # output j needs inputs up to floor(j·down / up) only: every j with j·down < n_in·up is ready
        last = (self.n_in * self.up - 1) // self.down if self.n_in else -1
        j = np.arange(self.n_out, last + 1, dtype=np.int64)
        self.n_out = last + 1
        newest = j * self.down // self.up - base  # the input under each output's first tap
        out = np.empty((self.channels, j.size), np.float32)
        out_lost = np.empty(j.size, bool)
        polyphase_fir(x, xl, newest, (j * self.down) % self.up, self.bank, out, out_lost)
        position = j * self.down / self.up - self.delay_in - base
        out_times = np.interp(position, np.arange(xt.size), xt)
        keep = self.per_phase  # the next output's taps reach back at most this far
        self.hist, self.hist_lost, self.hist_times = x[:, -keep:], xl[-keep:], xt[-keep:]
        return out, out_lost, out_times
