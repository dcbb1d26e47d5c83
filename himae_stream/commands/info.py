"""`himae info FILE`: what a model file holds, after checking all of it."""

from __future__ import annotations

import argparse
import json
import math

from himae_stream import modelfile, zoo


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file (.himae) or shipped model name (himae-100, himae-25)")
    p.add_argument("--json", action="store_true", help="print the configuration and metadata as JSON")


def describe(f: modelfile.ModelFile) -> list[str]:
    """Human-readable lines: configuration, checks, tensor table, card and probes."""
    c = f.config
    lengths = [math.ceil(c["window"] / 2 ** (level + 1)) for level in range(len(c["channels"]))]
    params = sum(t.size for t in f.tensors.values())
    encoder = sum(t.size for name, t in f.tensors.items() if name.startswith("encoder."))
    norm = ", ".join(f"{k}={v}" for k, v in c["normalizer"].items() if k != "kind")
    lines = [
        f"model        {c['name']}",
        f"input        {c['in_channels']} channel(s) {', '.join(c['channel_names'])} at {c['fs']:g} Hz, "
        f"window {c['window']} samples ({c['window'] / c['fs']:g} s)",
        f"levels       {len(c['channels'])}: channels {c['channels']}, positions {lengths}",
        f"convolution  kernel {c['kernel_size']}, stride {c['stride']}, decoder {'yes' if c['decoder'] else 'no'}",
        f"masking      patch {c['patch_size']}, ratio {c['mask_ratio']:g}",
        f"normaliser   {c['normalizer']['kind']}" + (f" ({norm})" if norm else ""),
        f"parameters   {params:,} (encoder {encoder:,}), BatchNorm folded",
        "checksums    header, metadata, tensor table, every tensor and whole file: ok",
        _memory_line(f.memory),
        "",
        f"{'tensor':34s} {'shape':>16s} {'values':>9s}",
    ]
    for name, t in f.tensors.items():
        lines.append(f"{name:34s} {str(list(t.shape)):>16s} {t.size:9,d}")
    prov = f.meta.get("provenance") or {}
    if prov:
        shown = [k for k in ("data", "seed", "steps", "date") if k in prov] or list(prov)
        lines += ["", "provenance   " + ", ".join(f"{k}={prov[k]}" for k in shown)]
    if "card" in f.meta:
        card = f.meta["card"]
        summary = card.get("summary", json.dumps(card)) if isinstance(card, dict) else json.dumps(card)
        lines += ["", f"card         {summary}"]
    if f.meta.get("probes"):
        heads = [p for p in f.meta["probes"] if isinstance(p, dict)]
        names = [p.get("name", "?") + ("" if p.get("default", True) else " (not in default records)")
                 + (f" (withheld where {g.get('head')} < {g.get('probability')})"
                    if isinstance(g := p.get("withheld_below"), dict) else "") for p in heads]
        lines += [f"probes       {len(names)}: {', '.join(names)}"]
        card = f.meta.get("card") if isinstance(f.meta.get("card"), dict) else {}
        for line in (card.get("heads") or {}).values():
            lines += [f"             {line}"]
    return lines


def _memory_line(memory: dict) -> str:
    """What loading takes (docs/model-format.md, "Memory"), and whether the default limit allows it."""
    from himae_stream.model import DEFAULT_MAX_MEMORY

    mib = lambda n: f"{n / 2**20:,.1f} MiB"  # noqa: E731
    line = f"memory       {mib(memory['weights'])} packed weights, {mib(memory['buffers'])} activation buffers"
    if memory["buffers"] > DEFAULT_MAX_MEMORY:
        line += f" (more than the default max_memory, {mib(DEFAULT_MAX_MEMORY)}: load with a larger one)"
    return line


def run(args: argparse.Namespace) -> int:
    f = modelfile.read(zoo.resolve(args.model))
    if args.json:
        print(json.dumps({"config": f.config, "meta": f.meta, "memory": f.memory,
                          "tensors": {k: list(v.shape) for k, v in f.tensors.items()}}, indent=1))
    else:
        print("\n".join(describe(f)))
    return 0
