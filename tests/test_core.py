"""The C core through its binding: parity with PyTorch, loader vs corpus, no allocation, GELU."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import WRIST_RUN
from readers import outcomes_of
from peak_rss import PEAK_RSS

from himae_stream import ModelFileError, load_model, modelfile
from himae_stream.model import supported_isas
from himae_stream.normalize import normalize
from himae_stream.recordings import load, resample
from training import HiMAE, export_model, get_config
from training.model import randomize_batchnorm

CORPUS = Path(__file__).parent / "corpus"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())
ISAS = supported_isas()


#: A configuration unlike the shipped ones: 3 input channels, kernel 7, odd
#: lengths, widths that fill no kernel panel exactly.
ODD = {"name": "odd", "in_channels": 3, "channel_names": ["PPG", "ACC_X", "ACC_Y"], "kernel_size": 7,
       "window": 301, "fs": 30.0, "channels": [8, 24, 40]}

#: Kernel 5 over 32 input channels: every conv takes Winograd in window mode, level 0's conv1 too (its
#: rows read in pairs are 64 floats), and lengths of 4q + 1 rows (129, 65) make F(4,3)'s last tile read
#: the most zero rows past its input.
WIDE_INPUT = {"name": "wide-input", "in_channels": 32, "channel_names": [f"c{i}" for i in range(32)],
              "kernel_size": 5, "window": 257, "fs": 25.0, "channels": [64, 128]}


def _random_model(name: str, seed: int) -> HiMAE:
    """A model in eval mode with random conv weights and randomised BatchNorm statistics."""
    torch.manual_seed(seed)
    extra = {"odd": ODD, "wide-input": WIDE_INPUT}.get(name)
    config = {**get_config("himae-25"), **extra} if extra else get_config(name)
    return randomize_batchnorm(HiMAE(config), seed + 1).eval()


def _real_windows(fs: float, window: int, count: int) -> np.ndarray:
    """`count` consecutive stream-normalised PPG windows (count, 1, window) from a wrist recording."""
    rec = load(WRIST_RUN, channels="PPG")
    ppg = resample(rec.signals, rec.fs, fs)
    x = normalize(ppg, {"kind": "stream"}, fs)[:, : count * window]
    return np.ascontiguousarray(x.reshape(1, count, window).transpose(1, 0, 2), dtype=np.float32)


def _assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    err = np.abs(got.astype(np.float64) - want)
    rel = np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want)
    assert err.max() <= 1e-4 and rel <= 1e-5, f"{what}: max abs {err.max():.3g}, relative L2 {rel:.3g}"


@pytest.fixture(scope="module", params=["himae-100", "himae-25", "odd", "wide-input"])
def exported(request, tmp_path_factory):
    model = _random_model(request.param, seed=7)
    path = tmp_path_factory.mktemp("models") / f"{request.param}.himae"
    export_model(model, path)
    return model, path


@pytest.mark.parametrize("isa", ISAS)
def test_encoder_matches_pytorch_on_random_and_real_windows(exported, isa):
    model, path = exported
    config = model.config
    engine = load_model(path, isa=isa)
    assert engine.isa == isa
    rng = np.random.default_rng(0)
    random_x = rng.standard_normal((3, config["in_channels"], config["window"])).astype(np.float32)
    cases = [("random", random_x)]
    if config["in_channels"] == 1:
        cases.append(("real", _real_windows(config["fs"], config["window"], 4)))
    for label, x in cases:
        with torch.no_grad():
            want = [h.double().numpy() for h in model.encode(torch.from_numpy(x))]
            want_emb = [h.double().numpy() for h in model.embed(torch.from_numpy(x))]
        got = engine.encode(x)
        got_emb = engine.embed(x)
        assert [g.shape for g in got] == [w.shape for w in want]
        for level, (g, w) in enumerate(zip(got, want)):
            _assert_close(g, w, f"{config['name']} {isa} {label} level {level}")
        for level, (g, w) in enumerate(zip(got_emb, want_emb)):
            _assert_close(g, w, f"{config['name']} {isa} {label} embedding {level}")
        # One window (C, L) gives the batch's first row without the batch axis.
        single = engine.encode(x[0])
        assert all(np.array_equal(s, g[0]) for s, g in zip(single, got))


def test_config_and_metadata_come_from_the_file(exported):
    model, path = exported
    engine = load_model(path)
    assert engine.config == modelfile.read(path).config == model.config
    assert engine.isa == ISAS[-1]
    assert engine.level_lengths == tuple(-(-model.config["window"] // 2 ** (l + 1)) for l in range(len(model.config["channels"])))


def test_no_allocation_after_load(exported):
    _model, path = exported
    engine = load_model(path)
    x = np.zeros((5, engine.config["in_channels"], engine.config["window"]), dtype=np.float32)
    engine.encode(x)
    before = engine.alloc_count
    for _ in range(3):
        engine.encode(x)
        engine.embed(x[0])
    assert engine.alloc_count == before
    load_model(path)
    assert engine.alloc_count > before  # the counter does count: a load allocates


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loader_accepts_and_refuses_like_the_python_reader(name):
    path = CORPUS / name
    want = EXPECTED[name]["error"]
    if want is None:
        engine = load_model(path)
        assert engine.config == modelfile.read(path).config
        return
    with pytest.raises(ModelFileError) as c_err:
        load_model(path)
    assert str(c_err.value).startswith(want)
    with pytest.raises(ModelFileError) as py_err:
        modelfile.read(path)
    # Same reason; the Python reader may append detail (e.g. the JSON error).
    assert str(py_err.value).startswith(str(c_err.value))


def test_bad_inputs_raise_value_errors(exported):
    _model, path = exported
    engine = load_model(path)
    C, L = engine.config["in_channels"], engine.config["window"]
    with pytest.raises(ValueError, match=rf"\({C}, {L}\) or \(B, {C}, {L}\)"):
        engine.encode(np.zeros((C, L + 1), dtype=np.float32))
    with pytest.raises(ValueError, match="float32"):
        engine.embed(np.zeros((C, L)))
    with pytest.raises(ValueError, match="not supported|unknown ISA"):
        load_model(path, isa="sse9")
    with pytest.raises(OSError):
        load_model(path.with_suffix(".missing"))


def test_himae_isa_environment_variable_forces_a_kernel(exported, monkeypatch):
    _model, path = exported
    monkeypatch.setenv("HIMAE_ISA", "scalar")
    assert load_model(path).isa == "scalar"
    assert load_model(path, isa=ISAS[-1]).isa == ISAS[-1]  # an explicit argument wins
    monkeypatch.setenv("HIMAE_ISA", "neon" if "avx2" in ISAS else "avx2")
    with pytest.raises(ValueError, match="not supported on this CPU"):
        load_model(path)


def test_transposed_views_are_converted(exported):
    _model, path = exported
    engine = load_model(path)
    L = engine.config["window"]
    C = engine.config["in_channels"]
    x = np.random.default_rng(1).standard_normal((L, C, 2)).astype(np.float32).T
    assert not x.flags.c_contiguous
    got = engine.embed(x)
    want = engine.embed(np.ascontiguousarray(x))
    assert all(np.array_equal(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("isa", ISAS)
def test_gelu_matches_torch_within_1e6(tmp_path, isa):
    """A one-channel, kernel-1 model whose level-0 output is GELU(x at even samples).

    The reference is torch's GELU in float64 (exact erf): torch's own vectorised
    float32 GELU is itself up to ~1.02e-6 away from it on this range.
    """
    n = 40001
    config = {
        "name": "gelu", "fs": 100.0, "window": 2 * n, "in_channels": 1, "channel_names": ["x"],
        "channels": [1], "kernel_size": 1, "stride": 2, "patch_size": 1, "mask_ratio": 0.0,
        "normalizer": {"kind": "minmax"}, "decoder": False,
    }
    one, zero = np.ones((1, 1, 1), np.float32), np.zeros((1,), np.float32)
    tensors = {
        "encoder.0.conv1.weight": zero.reshape(1, 1, 1), "encoder.0.conv1.bias": zero,
        "encoder.0.conv2.weight": zero.reshape(1, 1, 1), "encoder.0.conv2.bias": zero,
        "encoder.0.skip.weight": one, "encoder.0.skip.bias": zero,
    }
    path = tmp_path / "gelu.himae"
    modelfile.write(path, config, tensors)
    xs = np.linspace(-10, 10, n, dtype=np.float32)
    window = np.zeros((1, 2 * n), np.float32)
    window[0, ::2] = xs
    got = load_model(path, isa=isa).encode(window)[0][0]
    want = torch.nn.functional.gelu(torch.from_numpy(xs).double()).numpy()
    assert np.abs(got - want).max() <= 1e-6


def _fix_checksums(buf: bytearray, rng: np.random.Generator) -> None:
    """Recompute (most of the time) the checksums in front of a mutation, so it reaches deeper checks."""
    import struct
    import zlib

    n = len(buf)
    if n < 264:
        return
    meta_off, meta_size, table_off = struct.unpack_from("<QQQ", buf, 24)
    count = struct.unpack_from("<I", buf, 56)[0]
    if rng.random() < 0.8 and meta_off + meta_size <= n and meta_size < 1 << 21:
        struct.pack_into("<I", buf, 64, zlib.crc32(buf[meta_off : meta_off + meta_size]))
    if rng.random() < 0.8 and count <= 1024 and table_off + 96 * count <= n:
        table = buf[table_off : table_off + 96 * count]
        for i in range(count):
            off, size = struct.unpack_from("<QQ", table, 96 * i + 72)
            if rng.random() < 0.8 and off + size <= n and size < 1 << 24:
                struct.pack_into("<I", table, 96 * i + 88, zlib.crc32(buf[off : off + size]))
        buf[table_off : table_off + 96 * count] = table
        struct.pack_into("<I", buf, 60, zlib.crc32(bytes(table)))
    if rng.random() < 0.9:
        struct.pack_into("<I", buf, 252, zlib.crc32(bytes(buf[:252])))
    if rng.random() < 0.9:
        struct.pack_into("<I", buf, n - 8, zlib.crc32(bytes(buf[: n - 8])))


def _mutate_metadata(buf: bytearray, rng: np.random.Generator) -> None:
    """Edit the metadata text where JSON parsers differ: numbers, nesting, strings, normaliser fields."""
    import struct

    if len(buf) < 264:
        return
    meta_off, meta_size = struct.unpack_from("<QQ", buf, 24)
    if meta_off + meta_size > len(buf) or meta_size > 1 << 20:
        return
    text = bytes(buf[meta_off : meta_off + meta_size])
    edits = [b"9" * int(rng.integers(1, 130)), b"1e400", b"-0", b"NaN", b"Infinity", b"true", b"null", b'"\\ud800"',
             b"[" * 70, b"]", b"{", b'"kind": "stream"', b'"highpass_hz": 9007199254740992', b'"lowpass_hz": 9007199254740993',
             b'"scale_k": ' + b"9" * 400, b"\xff", b"\xef\xbb\xbf", b"\x00", b",", b'"', b" "]
    pos = int(rng.integers(0, len(text) + 1))
    cut = int(rng.integers(0, 4))
    text = text[:pos] + edits[int(rng.integers(0, len(edits)))] + text[pos + cut :]
    text = text[:meta_size].ljust(meta_size) if rng.random() < 0.7 else text  # keep the layout, or shift it
    buf[meta_off : meta_off + meta_size] = text[:meta_size]
    if len(text) != meta_size and rng.random() < 0.5:
        struct.pack_into("<Q", buf, 32, min(len(text), meta_size))


EDGE_VALUES = [b"9007199254740992", b"9007199254740993", b"9" * 100, b"9" * 101, b"9" * 400, b"1" * 5000, b"1e400",
               b"-1e-400", b"0", b"-0", b"5e-324", b"1.7976931348623157e308", b"1.7976931348623159e308", b"true",
               b"false", b"null", b"NaN", b"-Infinity", b'"3"', b"[]", b"{}", b"[" * 63 + b"]" * 63,
               b"[" * 64 + b"]" * 64, b'"\\ud800"', b'"\xc3\xa9"', b"0.5", b"8.0", b"1e-300"]


def _rewrite_metadata(seed: bytes, rng: np.random.Generator) -> bytes:
    """The seed with one JSON value of its metadata replaced by an edge value (as text) or two of its normaliser's
    numbers swapped, laid out again as a well-formed file: mutants whose JSON mostly still parses."""
    import re

    import struct

    parsed = modelfile.decode(seed)  # the seeds are valid
    start, size = struct.unpack_from("<QQ", seed, 24)
    text = seed[start : start + size]
    values = list(re.finditer(rb'(?<=[:\[,])\s*(-?[0-9][0-9.eE+-]*|true|false|null|"[^"]*")', text))
    if values and rng.random() < 0.85:
        m = values[int(rng.integers(0, len(values)))]
        text = text[: m.start(1)] + EDGE_VALUES[int(rng.integers(0, len(EDGE_VALUES)))] + text[m.end(1) :]
    else:  # highpass above lowpass, or equal
        text = text.replace(b'"highpass_hz"', b'"lowpass_hz_"').replace(b'"lowpass_hz"', b'"highpass_hz"')
        text = text.replace(b'"lowpass_hz_"', b'"lowpass_hz"')
    return modelfile.assemble(parsed.config, parsed.tensors, text)


def mutant(seeds: list[bytes], case: int, rng: np.random.Generator) -> bytes:
    """One mutated model file: metadata values rewritten, bit flips, extreme field values, cuts, metadata text
    edits; checksums mostly resealed."""
    buf = bytearray(seeds[case % len(seeds)])
    if rng.random() < 0.3:
        buf = bytearray(_rewrite_metadata(bytes(buf), rng))
        if rng.random() < 0.5:
            return bytes(buf)
    for _ in range(int(rng.integers(1, 4))):
        kind = rng.random() if len(buf) > 300 else 0.9
        if kind < 0.35:  # flip bits anywhere, header-heavy
            pos = int(rng.integers(0, 256 if rng.random() < 0.5 else len(buf)))
            buf[pos] ^= 1 << int(rng.integers(0, 8))
        elif kind < 0.6:  # overwrite a 4-byte field with an extreme value
            pos = int(rng.integers(0, len(buf) - 4)) & ~3
            buf[pos : pos + 4] = int(rng.choice([0, 1, 2, 3, 63, 64, 255, 2**20, 2**31, 2**32 - 1])).to_bytes(4, "little")
        elif kind < 0.85:
            _mutate_metadata(buf, rng)
        else:  # cut or extend
            buf = buf[: int(rng.integers(0, len(buf) + 1))] if rng.random() < 0.5 else buf + bytes(64)
    _fix_checksums(buf, rng)
    return bytes(buf)


def test_loader_and_python_reader_agree_on_mutated_files(tmp_path):
    """Differential fuzzing: both readers accept and refuse the same files with the same message, and refuse
    only with ModelFileError (the Python reader reads through the C loader's checks: this guards what it
    adds, json.loads, the normaliser's own check, the tensor arrays). HIMAE_MUTANTS=100000 runs a long one."""
    import os
    import re

    rng = np.random.default_rng(2026)
    seeds = [(CORPUS / "valid.himae").read_bytes(), (CORPUS / "valid_encoder_only.himae").read_bytes()]
    stream = make_corpus_module().with_metadata(
        b'{"name": "s", "channel_names": ["PPG"], "normalizer": {"kind": "stream", "highpass_hz": 0.5, '
        b'"lowpass_hz": 8, "tau_s": 5, "scale_k": 3, "clip": 1}, "provenance": {"seed": 12345678901234567890}}')
    seeds.append(stream)
    path = tmp_path / "m.himae"
    counts: dict = {}
    for case in range(int(os.environ.get("HIMAE_MUTANTS", 3000))):
        path.write_bytes(mutant(seeds, case, rng))
        c, py = outcomes_of(path)
        assert c == py, f"case {case}: C {c!r}, Python {py!r}"
        outcome = "accepted" if c is None else re.sub(r"\d+", "N", c.split(":")[0].split(" '")[0].split(" (in")[0])
        counts[outcome] = counts.get(outcome, 0) + 1
    print(f"{case + 1} mutants, outcomes: {dict(sorted(counts.items(), key=lambda kv: -kv[1]))}")
    assert len(counts) >= 12, counts  # the mutations reach many different checks


def make_corpus_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wide_model(path, window: int, channels: int) -> None:
    """A one-level, kernel-1, encoder-only model: tiny weights, activations of window / 2 x channels."""
    config = {"name": "wide", "fs": 100.0, "window": window, "in_channels": 1, "channel_names": ["x"],
              "channels": [channels], "kernel_size": 1, "stride": 2, "patch_size": 1, "mask_ratio": 0.0,
              "normalizer": {"kind": "minmax"}, "decoder": False}
    tensors = {name: np.full(shape, 0.01, np.float32) for name, shape in modelfile.expected_tensors(config, False).items()}
    modelfile.write(path, config, tensors)


def test_declared_activations_past_the_limit_are_refused_before_allocating(tmp_path):
    """A valid 4 MiB file (window 2^20, 1,024 channels, kernel 1) used to take 4.2 GB to load."""
    import subprocess
    import sys
    import textwrap

    path = tmp_path / "wide.himae"
    _wide_model(path, 1 << 20, 1024)
    assert path.stat().st_size < 5 << 20
    code = PEAK_RSS + textwrap.dedent(f"""
        from himae_stream import ModelFileError, load_model
        before = reset_peak()
        try:
            load_model({str(path)!r})
        except ModelFileError as exc:
            print(exc)
        print(peak() - before)
    """)
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, timeout=120, check=True)
    message, grew = result.stdout.strip().splitlines()
    needs = modelfile.read(path).memory["buffers"]
    assert needs > 4_000_000_000
    assert message == (f"too large to load: needs {needs} bytes of activation buffers, more than max_memory = "
                       f"{256 << 20} (in {path})")
    assert int(grew) < 100 << 20, f"the refusal grew the peak RSS by {int(grew) >> 20} MiB"


def test_max_memory_sets_the_limit(tmp_path):
    path = tmp_path / "wide.himae"
    _wide_model(path, 1 << 16, 64)
    needs = modelfile.read(path).memory["buffers"]
    assert 8 << 20 < needs < 32 << 20
    with pytest.raises(ModelFileError, match=f"needs {needs} bytes of activation buffers, more than max_memory = {needs - 1} "):
        load_model(path, max_memory=needs - 1)
    model = load_model(path, max_memory=needs)
    assert model.encode(np.ones((1, 1 << 16), np.float32))[0].shape == (64, 1 << 15)
    load_model(path)  # the default, 256 MiB, is far above it
    with pytest.raises(ValueError, match="max_memory must be a positive number of bytes"):
        load_model(path, max_memory=0)


@pytest.mark.parametrize("name", ["himae-100", "himae-25", "odd", "wide", "narrow", "deep"])
def test_memory_is_the_documented_function_of_the_file(tmp_path, name):
    """docs/model-format.md, "Memory": packed weights at most 4 x the tensor bytes plus 256 (K + 8)(C_in + 1)
    bytes per tensor; the buffers as the loader computes them, bounded by max_memory."""
    from himae_stream.model import DEFAULT_MAX_MEMORY

    extra = {"wide": {"channels": [4096], "kernel_size": 1, "window": 64},
             "narrow": {"channels": [1] * 8, "kernel_size": 15, "in_channels": 64, "channel_names": ["c"] * 64},
             "deep": {"channels": [3, 300, 7], "kernel_size": 3}}.get(name)
    if extra is None:
        model = _random_model(name, seed=1)
        config = model.config
    else:
        config = {**get_config("himae-25"), "decoder": True, **extra}
    tensors = {n: np.zeros(shape, np.float32) for n, shape in modelfile.expected_tensors(config, config["decoder"]).items()}
    path = tmp_path / "m.himae"
    modelfile.write(path, config, tensors)
    memory = modelfile.read(path).memory
    k = config["kernel_size"]
    bound = sum(4 * t.nbytes + 256 * (k + 8) * (t.shape[1] + 1 if t.ndim == 3 else 1) for t in tensors.values())
    assert memory["weights"] <= bound
    assert memory["buffers"] <= DEFAULT_MAX_MEMORY
    load_model(path)
