"""Subnormal floats: the core computes with flush-to-zero and puts the caller's mode back.

A subnormal costs an Intel core a microcode assist per operation; trained
weights make GELU underflow into them, which once made the shipped models
15-70x slower than random weights (csrc/fpmode.h). These tests guard the
behaviour, never a timing: subnormal inputs read as zeros (DAZ), no output
is subnormal (FTZ), the caller's floating-point mode is unchanged after
every call, and subnormal weights load as zeros in both readers.
"""

import ctypes
import ctypes.util
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from himae_stream import _core, load_model, modelfile, zoo
from himae_stream.model import supported_isas
from himae_stream.recordings import load, resample
from training import HiMAE, export_model, get_config

ISAS = supported_isas()
SHIPPED = ["himae-100", "himae-25"]
BUNDLED = Path(__file__).resolve().parents[1] / "himae_stream" / "data" / "a103l.hea"
TINY = np.finfo(np.float32).tiny  # 2^-126, the smallest normal float32
FLUSH_BITS = {"x86_64": 0x8040, "amd64": 0x8040, "aarch64": 1 << 24, "arm64": 1 << 24}  # MXCSR FTZ|DAZ, FPCR.FZ
# <fenv.h>'s FE_UPWARD and FE_DOWNWARD (glibc: x87 and SSE on x86-64, FPCR on AArch64)
ROUNDING = {"x86_64": (0x800, 0x400), "amd64": (0x800, 0x400), "aarch64": (0x400000, 0x800000),
            "arm64": (0x400000, 0x800000)}


def subnormal(a: np.ndarray) -> np.ndarray:
    return (a != 0) & (np.abs(a) < TINY)


def tensor_data(buf: bytes) -> np.ndarray:
    """A model file's data section as float32: every tensor and the zero padding between them."""
    data_offset = int(np.frombuffer(buf, "<u8", 1, 48)[0])  # header field data_offset
    return np.frombuffer(buf[data_offset : len(buf) - 8], "<f4")


def planted(x: np.ndarray, rng: np.random.Generator, every: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(x with a random subnormal of random sign at every `every`-th value, the same with signed zeros there)."""
    with_sub, with_zero = x.copy(), x.copy()
    flat_sub, flat_zero = with_sub.reshape(-1).view(np.uint32), with_zero.reshape(-1).view(np.uint32)
    n = flat_sub[::every].size
    sign = rng.integers(0, 2, n, dtype=np.uint32) << np.uint32(31)
    flat_sub[::every] = sign | rng.integers(1, 1 << 23, n, dtype=np.uint32)
    flat_zero[::every] = sign
    assert subnormal(with_sub).sum() == n and not subnormal(with_zero).any()
    return with_sub, with_zero


def stream_activations(model, x: np.ndarray, chunk: int) -> list[np.ndarray]:
    """Every level's activations of a stream pushed in chunks (preparing between them), then flushed."""
    engine = _core.StreamEngine(model)
    out = [[] for _ in range(engine.levels)]
    for start in range(0, x.shape[1], chunk):
        for level, (_, acts) in enumerate(engine.push(x[:, start : start + chunk])):
            out[level].append(acts)
        engine.prepare()
    for level, (_, acts) in enumerate(engine.push(x[:, :0], flush=True)):
        out[level].append(acts)
    return [np.concatenate(parts, axis=1) for parts in out]


@pytest.fixture(scope="module")
def zero_bias_model(tmp_path_factory):
    """himae-25 with random weights and untrained BatchNorm: every encoder bias is 0, so
    activations of a tiny input stay tiny and a subnormal input would change them."""
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("fpmode") / "himae-25-zero-bias.himae"
    export_model(HiMAE(get_config("himae-25")).eval(), path)
    return path


@pytest.fixture(scope="module")
def real_windows():
    """Windows of the bundled PhysioNet PPG, resampled and normalised per shipped model."""
    rec = load(BUNDLED, channels="PLETH")
    windows = {}
    for name in SHIPPED:
        model = load_model(name)
        fs, length = model.config["fs"], model.config["window"]
        x = model.normalize(resample(rec.signals, rec.fs, fs).astype(np.float32))
        count = x.shape[1] // length
        windows[name] = np.ascontiguousarray(
            x[:, : count * length].reshape(1, count, length).transpose(1, 0, 2), dtype=np.float32)
    return windows


@pytest.mark.parametrize("isa", ISAS)
def test_subnormal_inputs_read_as_zeros(zero_bias_model, isa):
    """DAZ: the same bits as zeros there, in window mode, reconstruction and stream mode, beside
    values small enough (1e-36) that a subnormal read as itself would change the sums."""
    rng = np.random.default_rng(11)
    for path in [zero_bias_model, *SHIPPED]:
        model = load_model(path, isa=isa)
        c, length = model.config["in_channels"], model.config["window"]
        tiny = rng.uniform(0.5, 2, (2, c, length)) * rng.choice([-1e-36, 1e-36], (2, c, length))
        x_sub, x_zero = planted(tiny.astype(np.float32), rng)
        for got, want in zip(model.encode(x_sub), model.encode(x_zero)):
            assert got.tobytes() == want.tobytes(), f"{path} {isa}: encode"
        assert model.reconstruct(x_sub).tobytes() == model.reconstruct(x_zero).tobytes(), f"{path} {isa}"
        signal_sub, signal_zero = (np.ascontiguousarray(np.concatenate(list(x), axis=1)) for x in (x_sub, x_zero))
        for got, want in zip(stream_activations(model, signal_sub, 97), stream_activations(model, signal_zero, 97)):
            assert got.tobytes() == want.tobytes(), f"{path} {isa}: stream"


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_write_no_subnormal(name, isa, real_windows):
    """FTZ: no level output, embedding, stream activation or reconstruction of a shipped
    model is subnormal, on seeded inputs of std 0.3, 1 and 3 and on real PPG."""
    model = load_model(name, isa=isa)
    c, length = model.config["in_channels"], model.config["window"]
    rng = np.random.default_rng(5)
    inputs = {f"std {std}": (rng.standard_normal((4, c, length)) * std).astype(np.float32) for std in (0.3, 1, 3)}
    inputs["a103l"] = real_windows[name]
    for what, x in inputs.items():
        outputs = {"encode": model.encode(x), "embed": model.embed(x), "reconstruct": [model.reconstruct(x)],
                   "stream": stream_activations(model, np.ascontiguousarray(np.concatenate(list(x), axis=1)), 250)}
        for kind, arrays in outputs.items():
            found = sum(int(subnormal(a).sum()) for a in arrays)
            assert found == 0, f"{name} {isa} {what}: {found} subnormal values in {kind}"


@pytest.mark.parametrize("isa", ISAS)
def test_every_call_leaves_the_callers_mode_as_it_was(isa):
    model = load_model("himae-25", isa=isa)
    x = (np.random.default_rng(2).standard_normal((1, model.config["window"])) * 3).astype(np.float32)
    engine = _core.StreamEngine(model)
    stream = model.stream(hop=25)
    mode = _core.fp_mode()
    # Python and numpy never turn flush to zero on: set here, an earlier call kept the core's mode.
    assert mode & FLUSH_BITS.get(platform.machine().lower(), 0) == 0, f"mode {mode:#x} flushes to zero"
    calls = {
        "encode": lambda: model.encode(x),
        "embed": lambda: model.embed(x),
        "reconstruct": lambda: model.reconstruct(x),
        "engine push": lambda: engine.push(x),
        "engine prepare": engine.prepare,
        "engine flush": lambda: engine.push(x[:, :0], flush=True),
        "stream push": lambda: stream.push(x),
        "stream prepare": stream.prepare,
        "stream flush": stream.flush,
    }
    for what, call in calls.items():
        call()
        assert _core.fp_mode() == mode, f"{isa} {what}: mode {mode:#x} left as {_core.fp_mode():#x}"


@pytest.mark.skipif(platform.machine().lower() not in ROUNDING, reason="no known fenv constants here")
@pytest.mark.parametrize("isa", ISAS)
def test_no_result_depends_on_the_callers_rounding_mode(isa, real_windows):
    """A caller that left rounding upward or downward (fesetround) gets the same bits as one that
    left it to nearest: loading (Winograd transforms, int8 weights), window mode, reconstruction and
    stream pushes run rounded to nearest, in every precision (int8's row rounding too)."""
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    x = real_windows["himae-25"][:2]
    signal = np.ascontiguousarray(np.concatenate(list(x), axis=1))

    def results(precision):
        model = load_model("himae-25", isa=isa, precision=precision)
        return [*model.encode(x), model.reconstruct(x), *stream_activations(model, signal, 97)]

    for precision in _core.supported_precisions(isa):
        want = [a.tobytes() for a in results(precision)]
        for mode in ROUNDING[platform.machine().lower()]:
            assert libm.fesetround(mode) == 0
            try:
                got = [a.tobytes() for a in results(precision)]
            finally:
                libm.fesetround(0)
            assert got == want, f"{isa} {precision}: rounding mode {mode:#x} changed the results"


def _tensors_with(config, rng):
    """Random tensors for `config` and the same with subnormals planted in every one (planted, zeroed)."""
    torch.manual_seed(4)
    from training.export import folded_tensors

    base = folded_tensors(HiMAE(config).eval())
    with_sub, with_zero = {}, {}
    for name, a in base.items():
        with_sub[name], with_zero[name] = planted(a, rng, every=7)
    return with_sub, with_zero


@pytest.mark.parametrize("name", SHIPPED)
def test_subnormal_weights_load_as_zeros_in_both_readers(name, tmp_path):
    """The Python reader returns signed zeros where a file holds subnormal weights; the C loader
    computes, on every ISA, exactly what it computes from a file with those zeros (csrc/tests
    checks its packed weights themselves)."""
    config = get_config(name)
    with_sub, with_zero = _tensors_with(config, np.random.default_rng(9))
    paths = tmp_path / "planted.himae", tmp_path / "zeroed.himae"
    modelfile.write(paths[0], config, with_sub)
    modelfile.write(paths[1], config, with_zero)
    read = modelfile.read(paths[0]).tensors
    for tensor, want in with_zero.items():
        assert read[tensor].tobytes() == want.tobytes(), tensor
    x = np.random.default_rng(1).standard_normal((2, 1, config["window"])).astype(np.float32)
    for isa in ISAS:
        planted_model, zeroed_model = (load_model(p, isa=isa) for p in paths)
        for got, want in zip(planted_model.encode(x), zeroed_model.encode(x)):
            assert got.tobytes() == want.tobytes(), isa
        assert planted_model.reconstruct(x).tobytes() == zeroed_model.reconstruct(x).tobytes(), isa


def test_exporter_writes_no_subnormal_weight(tmp_path):
    torch.manual_seed(6)
    model = HiMAE(get_config("himae-25")).eval()
    with torch.no_grad():
        for conv in (model.encoder[0].conv1, model.encoder[1].skip, model.head):
            conv.weight.view(-1)[::3] = 1e-39  # subnormal in float32 and after the BatchNorm fold
    path = tmp_path / "m.himae"
    export_model(model, path)
    assert not subnormal(tensor_data(path.read_bytes())).any()
    assert (modelfile.read(path).tensors["head.weight"].reshape(-1)[::3] == 0).all()


def test_shipped_model_files_hold_no_subnormal_weight():
    for name in SHIPPED:
        assert not subnormal(tensor_data(zoo.resolve(name).read_bytes())).any(), name
