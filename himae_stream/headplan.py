"""A model's probe heads as one C call per burst of windows.

`probes` defines what each head computes; this module computes it for every
head and window at once. Live, a record's heads run once every push, after
the event loop has waited for the device: by then the machine has run other
work, and each distinct function a push touches runs from cold caches (tens
of microseconds each, measured). As a few dozen numpy calls per window the
heads were most of a live record's latency; as one numba function of thirty
arguments its dispatch alone was; as one C call (`csrc/heads.c`) on tables
built once, the path is short.

The plan, built once per window shape, lists what a window needs:

- spectra: per (level, basis, padding, band), the band power of the level's
  activations projected on the basis (products in the activations' type
  with the band's DFT matrix from `probes._band_dft`, squares summed in
  float64), as `probes.level_power` defines it over the band's bins;
- pools: the mean and standard deviation over positions of each level a
  linear head reads (float64);
- spectral heads: the weighted sum of their spectra, each scaled to unit
  sum, and its parabola-refined peak;
- linear heads: their features in `probes.feature_size` order (pools, then
  purities, or one purity of the summed unit spectra), through the head's
  folded affine map.

Windows come as per-level buffers `(C_l, positions)` and each window's first
position per level, so the live positions buffer is read in place.
"""

from __future__ import annotations

import math

import numpy as np

from himae_stream import probes as P
from himae_stream._core import LOGISTIC, PROBABILITY, RIDGE, HeadKernel, window_records

#: Runs of at most this many windows keep their arrays between runs (`Plan.run`); live bursts are a
#: window or a few.
SCRATCH_WINDOWS = 4

#: kinds of a linear head's feature segment
MEAN, STD, PURITY, COMBINED = 0, 1, 2, 3


class Plan:
    """What the heads read of a window of `span` input samples with `lengths[l]` positions per level."""

    def __init__(self, heads: list[dict], bases: dict, fs: float, span: int, channels: list[int],
                 lengths: list[int], dtype=np.float32):
        self.lengths = np.asarray(lengths, np.int64)
        specs: dict = {}  # (level, id of basis, pad, band) -> spectrum index
        spec_bases, spec_dfts, spec_level, spec_bins, spec_half = [], [], [], [], []

        def spectrum(level: int, basis, pad: int, band) -> tuple[int, float, int]:
            """Index of the spectrum, its bin width and its first bin."""
            n = lengths[level]
            stride = 2 ** (level + 1)
            size = max(n, int(round(pad * span / stride)))
            df = fs / stride / size
            lo = int(math.ceil(band[0] / df - 1e-9))
            key = (level, id(basis), pad, tuple(band))
            if key not in specs:
                bins = int(math.floor(band[1] / df + 1e-9)) - lo + 1
                specs[key] = len(spec_level)
                b = np.eye(channels[level]) if basis is None else basis
                spec_bases.append(np.ascontiguousarray(b, dtype))
                spec_dfts.append(P._band_dft(max(n, 1), size, lo, bins, dtype))
                spec_level.append(level)
                spec_bins.append(bins)
                spec_half.append(max(1, int(round(P.PURITY_HALF_WIDTH_HZ / df))))
            return specs[key], df, lo

        # spectral heads: rows of (spectrum, weight); linear heads: feature segments
        rate_specs, rate_weights, rate_lo, rate_df = [], [], [], []
        segments, combined, linear = [], [], []
        w_parts, b_parts, features, outputs = [], [], 0, 0
        for head in heads:
            basis = bases[id(head)]
            if head["kind"] == "spectral":
                band, pad = head.get("band_hz", P.HR_BAND_HZ), int(head.get("pad", P.PAD))
                got = [spectrum(l, b, pad, band) for l, b in zip(head["levels"], basis)]
                rate_specs.append([g[0] for g in got])
                rate_weights.append(list(head["weights"]))
                rate_lo.append(got[0][2])
                rate_df.append(got[0][1])
                continue
            start = features
            for level in P.feature_levels(head):
                for pool in P.feature_pool(head):
                    segments.append((MEAN if pool == "mean" else STD, level, features))
                    features += channels[level]
            spectral = [spectrum(l, b, P.PAD, P.HR_BAND_HZ)[0] for l, b in zip(P.purity_levels(head), basis)]
            if head.get("purity_mode") == "combined" and spectral:
                segments.append((COMBINED, len(combined), features))
                combined.append(spectral)
                features += 1
            else:
                for s in spectral:
                    segments.append((PURITY, s, features))
                    features += 1
            w, b = P.fold(head)
            w_parts.append((start, features, outputs, w))
            b_parts.append(b)
            kind = {"ridge": RIDGE, "probability": PROBABILITY, "logistic": LOGISTIC}[head["kind"]]
            classes = tuple(head.get("classes") or ())
            linear.append((head["name"], kind, outputs, outputs + len(b), classes, head["name"] + "_p"))
            outputs += len(b)
        self._spectral = [h for h in heads if h["kind"] == "spectral"]
        self._rate_names = tuple(h["name"] for h in self._spectral)
        self._fields = tuple(linear)  # (name, kind, first score, end, classes, name + "_p") of each linear head
        self._scratch: dict = {}  # windows per run -> its arrays (see `run`)
        self.spec_level = np.asarray(spec_level, np.int64)
        self.spec_bins = np.asarray(spec_bins, np.int64)
        self.rate_specs = _table(rate_specs, -1, np.int64)
        self.rate_weights = _table(rate_weights, 0.0, np.float64)
        self.rate_lo = np.asarray(rate_lo, np.float64)
        self.rate_df = np.asarray(rate_df, np.float64)
        self.segments = np.asarray(segments, np.int64).reshape(-1, 3)
        self.combined = _table(combined, -1, np.int64)
        self.weights = np.zeros((features, outputs))
        for start, end, first, w in w_parts:
            self.weights[start:end, first : first + w.shape[1]] = w
        self.bias = np.concatenate(b_parts) if b_parts else np.zeros(0)
        self.features = features
        pooled = np.zeros(len(lengths), np.bool_)
        for kind, arg, _ in self.segments:
            if kind in (MEAN, STD):
                pooled[arg] = True
        self.width = max(channels)
        self.bins = max(self.spec_bins.max(initial=1), 1)
        self.kernel = HeadKernel(dtype, self.lengths, channels, pooled, self.spec_level, self.spec_bins, spec_half,
                                 spec_bases, spec_dfts, self.rate_specs, self.rate_weights, self.rate_lo,
                                 self.rate_df, self.segments, self.combined, self.weights, self.bias, self.width,
                                 self.bins)

    def parts(self, count: int) -> tuple:
        """Spectra `(W, spectra, bins)`, pools `(W, levels, width)` (mean, std) and the levels to
        compute `(W, levels)` of `count` windows: what `levels` computes and `run` reads."""
        levels = len(self.lengths)
        return (np.zeros((count, len(self.spec_level), self.bins)), np.zeros((count, levels, self.width)),
                np.zeros((count, levels, self.width)), np.ones((count, levels), np.bool_))

    def levels(self, buffers: tuple, starts: np.ndarray, parts: tuple) -> None:
        """Into `parts`: each window's spectra and pools of the levels `parts[3][w]` marks, the
        windows' level-l positions starting at `starts[w, l]` in `buffers[l]`."""
        self.kernel.levels_into(buffers, starts, parts[3], *parts[:3])

    def run(self, buffers: tuple, starts: np.ndarray, ahead: "Ahead | None" = None, keys=None):
        """Rates `(W, spectral heads)` (NaN: no power in the band), linear scores `(W, outputs)` and
        features `(W, features)` of the windows whose level-l positions start at `starts[w, l]` in
        `buffers[l]` `(C_l, ·)` (the plan's dtype). A window whose key (its start) `ahead` holds
        is taken out of it, and only its levels not computed ahead are computed now.

        The arrays of a burst of up to `SCRATCH_WINDOWS` windows are the plan's own, valid until its
        next run: live, a record's heads then allocate nothing (each allocation after the event
        loop's wait runs from cold caches)."""
        count = starts.shape[0]
        scratch = self._scratch.get(count)
        if scratch is None:
            scratch = (self.parts(count), (np.empty((count, len(self._spectral))),
                                           np.empty((count, self.weights.shape[1])), np.empty((count, self.features))))
            if count <= SCRATCH_WINDOWS:
                self._scratch[count] = scratch
        self.kernel.run_into(buffers, starts, keys, None if ahead is None else ahead.ring(self), *scratch)
        return scratch[1]

    def records(self, rates: np.ndarray, scores: np.ndarray) -> list[dict]:
        """Each window's output fields, ready for a sink (see `Heads.apply`)."""
        return window_records(rates, scores, self._rate_names, self._fields)


def _table(rows: list[list], fill, dtype) -> np.ndarray:
    """Ragged rows as one array, padded with `fill` (at least one column)."""
    width = max([len(r) for r in rows] + [1])
    out = np.full((len(rows), width), fill, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


class Ahead:
    """Windows' levels computed ahead of their record (`Heads.ahead_at`): per plan, a ring of
    `SLOTS` windows keyed by their first input sample, each taken once by `Plan.run`."""

    SLOTS = 128

    def __init__(self, slots: int = SLOTS):
        self.slots = slots
        self.puts = 0  # windows held so far
        self._rings: dict = {}
        self._next: dict = {}

    def held(self) -> int:
        """Windows held and not yet taken."""
        return sum(int((ring[0] >= 0).sum()) for ring in self._rings.values())

    def ring(self, plan: Plan) -> tuple:
        """(keys (−1: free), spectra, means, stds, levels done) of `plan`'s windows held."""
        ring = self._rings.get(plan)
        if ring is None:
            keys = np.full(self.slots, -1, np.int64)
            done = np.zeros((self.slots, len(plan.lengths)), np.bool_)
            ring = self._rings[plan] = (keys, *plan.parts(self.slots)[:3], done)
            self._next[plan] = 0
        return ring

    def put(self, plan: Plan, key: int, parts: tuple, done: np.ndarray) -> None:
        """Hold one window's parts (row 0 of each) under `key`, over the oldest held."""
        keys, power, mean, std, held = self.ring(plan)
        k = self._next[plan]
        self._next[plan] = (k + 1) % self.slots
        self.puts += 1
        keys[k], power[k], mean[k], std[k], held[k] = key, parts[0][0], parts[1][0], parts[2][0], done


class Heads:
    """A model's probe heads, ready to apply window after window (`probes` says what each computes).

    Heads flagged `"default": false` are left out unless `everything` is set.
    """

    def __init__(self, heads: list[dict], fs: float = 1.0, everything: bool = False):
        self.heads = [h for h in heads if everything or P.is_default(h)]
        self.fs = float(fs)
        self._gates = P.gates(self.heads, heads)
        # a head that gates another is computed even where records leave it out
        needed = {gate for gate, _ in self._gates.values()} - {h["name"] for h in self.heads}
        hidden = [h for h in heads if h["name"] in needed]
        self._hidden = {h["name"] for h in hidden}
        self._computed = self.heads + hidden
        # heads carrying equal bases share one array, so a window's spectra are computed once
        known: dict = {}
        self._bases = {id(h): [None if b is None else known.setdefault((b.shape, b.tobytes()), b)
                               for b in P.bases(h)] for h in self._computed}
        self._plans: dict = {}

    def __iter__(self):
        return iter(self.heads)

    def __len__(self) -> int:
        return len(self.heads)

    def plan(self, span: int, channels: list[int], lengths: list[int], dtype=np.float32) -> Plan:
        """The plan for windows of `span` samples with these positions per level (built once)."""
        key = (span, tuple(lengths), dtype)  # dtype as given: np.dtype() costs a live record's heads 10 µs
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = Plan(self._computed, self._bases, self.fs, span, channels, lengths, dtype)
        return plan

    def _shown(self, records: list[dict]) -> list[dict]:
        """The records as shown: a gated head's value withheld (None) where its gate's probability is
        below the head's least, and heads computed only to gate others left out."""
        for record in records:
            for name, (gate, least) in self._gates.items():
                p = record.get(gate)
                if record.get(name) is not None and not (p is not None and p >= least):
                    record[name] = None
            for name in self._hidden:
                del record[name]
        return records

    def apply(self, windows, spans) -> list[dict]:
        """Every head's output for each window: `windows[i][l]` is window i's level-l activations
        `(C_l, n_l)`, `spans[i]` its length in input samples.

        A window gives `{name: value}` for ridge, probability and spectral heads
        and `{name: class}` plus `{name + "_p": {class: probability}}` for
        logistic heads, ready for a sink.
        """
        return self._shown([record for plan, buffers, starts in self._groups(windows, spans)
                            for record in plan.records(*plan.run(buffers, starts)[:2])])

    def features(self, windows, spans) -> np.ndarray:
        """The linear heads' features of each window `(W, features)`, heads in order (then any head
        computed only to gate another)."""
        parts = [plan.run(buffers, starts)[2].copy() for plan, buffers, starts in self._groups(windows, spans)]
        return np.concatenate(parts) if parts else np.zeros((0, 0))

    def ahead_at(self, positions: P.Positions, spans: list[tuple[int, int]], ahead: Ahead) -> None:
        """Compute now what windows [start, end) still to come need of the levels `positions` already
        holds in full, into `ahead` for `apply_at` to finish.

        Live, a window's shallow levels are complete long before its deepest one, which looks
        furthest ahead (`Stream.delay`: 0.9 s against 1.86 s for himae-100), and the window's record
        waits on that one. Their spectra and pools, most of the heads' work, are then done between
        pushes instead of after the sample that completes the window; each level's part is computed
        as `apply_at` would compute it, on the same positions.
        """
        held = [base + n for base, n in zip(positions.base, positions.held)]
        first, _ = positions.starts(spans)  # columns of the levels held (the others are not read)
        for (start, end), columns in zip(spans, first):
            full = [P.positions(l, start, end, 1 << 62) for l in range(len(held))]
            done = np.array([sl.stop <= held[l] for l, sl in enumerate(full)])
            plan = self.plan(end - start, positions.channels, [sl.stop - sl.start for sl in full])
            parts = plan.parts(1)
            parts[3][0] = done
            plan.levels(tuple(positions.buf), columns[None], parts)
            ahead.put(plan, start, parts, done)

    def apply_at(self, positions: P.Positions, spans: list[tuple[int, int]], ahead: Ahead | None = None) -> list[dict]:
        """`apply` to the windows [start, end) of a live positions buffer, read in place; a window
        `ahead` holds (see `ahead_at`) is taken out of it and only its remaining levels computed."""
        out: list[dict] = []
        starts, lengths = positions.starts(spans)
        i = 0
        while i < len(spans):  # windows of one shape (a burst, live) go through together
            span = spans[i][1] - spans[i][0]
            j = i + 1
            while j < len(spans) and spans[j][1] - spans[j][0] == span and (lengths[j] == lengths[i]).all():
                j += 1
            plan = self.plan(span, positions.channels, lengths[i].tolist())
            keys = np.array([s for s, _ in spans[i:j]], np.int64) if ahead is not None else None
            out += plan.records(*plan.run(tuple(positions.buf), starts[i:j], ahead, keys)[:2])
            i = j
        return self._shown(out)

    def _groups(self, windows, spans):
        """(plan, per-level buffers, starts) for each run of windows of one span, shape and dtype."""
        i = 0
        while i < len(windows):
            first = [np.asarray(a) for a in windows[i]]
            dtype = np.float64 if any(a.dtype == np.float64 for a in first) else np.float32
            j = i + 1
            while j < len(windows) and spans[j] == spans[i] and all(
                    np.shape(a) == b.shape for a, b in zip(windows[j], first)):
                j += 1
            lengths = [a.shape[1] for a in first]
            plan = self.plan(spans[i], [a.shape[0] for a in first], lengths, dtype)
            buffers = tuple(np.ascontiguousarray(np.concatenate([np.asarray(w[l]) for w in windows[i:j]], axis=1),
                                                 dtype) for l in range(len(first)))
            starts = np.arange(j - i, dtype=np.int64)[:, None] * np.array(lengths, np.int64)[None, :]
            yield plan, buffers, starts
            i = j
