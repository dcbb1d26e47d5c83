"""Reduced precision: bf16 weights (`load_model(..., precision="bf16")`), the f32 arithmetic on weights rounded
at load; bf16dot, bfloat16 dot products of rounded weights and inputs with f32 sums; and int8, weights and each
conv's input rows rounded to int8 with scales of their own, summed exactly; how little each moves what a user
sees on real recordings (docs/stream-mode.md, "Reduced precision")."""

import warnings

import numpy as np
import pytest
from conftest import BUNDLED, V102S

import himae_stream
from himae_stream import ImputationWarning, impute, modelfile
from himae_stream.model import alloc_count, load_model, supported_isas, supported_precisions
from training import HiMAE, export_model, get_config
from training.model import randomize_batchnorm

TOL = 1e-5  # the f32 engine's own tolerance against PyTorch (tests/test_stream.py)
#: bf16dot runs on the best ISA where the CPU has AVX512-BF16, else on the scalar kernel that states it
DOT_ISA = None if "bf16dot" in supported_precisions() else "scalar"
#: int8 likewise where the CPU has AVX2, AVX512-VNNI or ARM DotProd
INT8_ISA = None if "int8" in supported_precisions() else "scalar"
#: every ISA with an int8 kernel here (each sums the same integers by its own instructions)
INT8_ISAS = [isa for isa in supported_isas() if "int8" in supported_precisions(isa)]
REDUCED = [("bf16", None), ("bf16dot", DOT_ISA), ("int8", INT8_ISA)]
if "avx2" in INT8_ISAS and supported_isas()[-1] != "avx2":  # AVX2's int8 kernel too, below the best ISA's
    REDUCED.append(("int8", "avx2"))


def reduced(name, precision: str, isa: str | None):
    """A model loaded in a reduced precision (bf16dot on the ISA that runs it here)."""
    return load_model(name, precision=precision, isa=isa)


def bf16(a: np.ndarray) -> np.ndarray:
    """f32 values rounded to the nearest bfloat16 (ties to even), as f32."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32).reshape(np.shape(a))


@pytest.fixture(scope="module", params=["himae-100", "himae-25"])
def files(request, tmp_path_factory):
    """A random-weight model file and its twin whose tensors are already rounded to bf16, but for level 0's
    (f32 in every precision)."""
    import torch

    torch.manual_seed(3)
    tmp = tmp_path_factory.mktemp("bf16")
    path, rounded = tmp / "m.himae", tmp / "m-bf16.himae"
    export_model(randomize_batchnorm(HiMAE(get_config(request.param)), 3).eval(), path)
    f = modelfile.read(path)
    modelfile.write(rounded, f.config, {k: v if k.startswith("encoder.0.") else bf16(v) for k, v in f.tensors.items()},
                    f.meta)
    return path, rounded


def _stream_levels(model, x):
    stream = model.stream(window=model.config["window"], hop=97, normalize=False)
    outs = [stream.push(x[:, i : i + n]) for i, n in ((0, 1), (1, 250), (251, 3000), (3251, x.shape[1] - 3251))]
    outs.append(stream.flush())
    return [np.concatenate([o.levels[l][1] for o in outs], axis=1) for l in range(len(model.config["channels"]))]


def test_bf16_stream_is_the_f32_stream_of_rounded_weights_bit_for_bit(files):
    path, rounded = files
    x = np.random.default_rng(1).standard_normal((1, 7000)).astype(np.float32)
    got = _stream_levels(load_model(path, precision="bf16"), x)
    want = _stream_levels(load_model(rounded), x)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("precision, isa", REDUCED)
def test_level_0_runs_f32_in_every_precision(files, precision, isa):
    """Level 0's few weights stay f32 (they cost no memory traffic to speak of, and the quality head reads
    the level's per-channel spread): its rows are the f32 model's bits; deeper levels are rounded."""
    x = np.random.default_rng(6).standard_normal((1, 3000)).astype(np.float32)
    got = _stream_levels(reduced(files[0], precision, isa), x)
    want = _stream_levels(load_model(files[0], isa=isa), x)
    np.testing.assert_array_equal(got[0], want[0])
    assert not np.array_equal(got[1], want[1])


def test_bf16_window_mode_and_decoder_are_the_rounded_weights(files):
    path, rounded = files
    model, twin = load_model(path, precision="bf16"), load_model(rounded)
    assert (model.precision, twin.precision) == ("bf16", "f32")
    x = np.random.default_rng(2).standard_normal((3, 1, model.config["window"])).astype(np.float32)
    for g, w in zip(model.encode(x), twin.encode(x)):  # the f32 twin's deep levels take Winograd, bf16 never
        assert np.abs(g - w).max() <= TOL * np.abs(w).max()
    g, w = model.reconstruct(x), twin.reconstruct(x)
    assert np.abs(g - w).max() <= TOL * np.abs(w).max()


@pytest.mark.parametrize("precision, isa", REDUCED)
def test_reduced_precision_push_allocates_nothing(files, precision, isa):
    model = reduced(files[0], precision, isa)
    stream = model.stream(normalize=False)
    x = np.random.default_rng(0).standard_normal((1, 20000)).astype(np.float32)
    stream.push(x[:, :10])
    before = alloc_count()
    for i, n in ((10, 1), (11, 7), (18, 1000), (1018, 9000), (10018, 0), (10018, 5000)):
        stream.push(x[:, i : i + n])
    stream.flush()
    assert alloc_count() == before


def test_unknown_precision_is_one_line():
    with pytest.raises(ValueError, match=r"^unknown precision 'fp8' \(choose f32, bf16, bf16dot or int8\)$"):
        load_model("himae-25", precision="fp8")


def test_bf16dot_without_its_instructions_is_one_line():
    """AVX2 has no bf16 dot product: asking for one there names the ISA and what runs instead."""
    if "avx2" not in supported_isas():
        pytest.skip("no AVX2 on this CPU")
    assert supported_precisions("avx2") == ["f32", "bf16", "int8"]
    with pytest.raises(ValueError, match=r"^precision 'bf16dot' has no avx2 kernel on this CPU \(bf16dot "
                                         r"needs AVX512-BF16 or ARM BF16, int8 AVX2, AVX512-VNNI or ARM DotProd; bf16 "
                                         r"runs everywhere\)$"):
        load_model("himae-25", precision="bf16dot", isa="avx2")


def _window_streamed(model, x):
    """Per level, the activations of one window x (1, window) streamed and flushed: one sample, then pieces of
    99 (a deep level's few new rows a push, as live: the kernels' few-row forms), then the rest at once."""
    stream = model.stream(window=x.shape[1], hop=97, normalize=False)
    cuts = [0, 1, *range(100, x.shape[1] // 2, 99), x.shape[1]]
    outs = [stream.push(x[:, a:b]) for a, b in zip(cuts, cuts[1:])] + [stream.flush()]
    return [np.concatenate([o.levels[level][1] for o in outs], axis=1) for level in range(len(outs[0].levels))]


def _assert_a_group_gives_each_stream_s_bits(model):
    window = model.config["window"]
    group = model.streams(2, window=window, hop=97, normalize=False)
    single = model.stream(window=window, hop=97, normalize=False)
    y = np.random.default_rng(5).standard_normal((2, 1, 2 * window)).astype(np.float32)
    for piece in (slice(0, 150), slice(150, 2 * window)):
        outs, one = group.push(y[..., piece]), single.push(y[1][:, piece])
        for (_, a), (_, b) in zip(outs[1].levels, one.levels):
            np.testing.assert_array_equal(a, b)


def test_bf16dot_window_and_stream_mode_agree(files):
    """One window streamed in pieces and flushed is window mode's input with its zero padding: the same
    rounded weights and inputs, summed in another order (a live row is split in two), so within bf16's
    rounding of each other; and a group of streams gives a single stream's bits."""
    model = reduced(files[0], "bf16dot", DOT_ISA)
    x = np.random.default_rng(4).standard_normal((1, model.config["window"])).astype(np.float32)
    for level, (got, want) in enumerate(zip(_window_streamed(model, x), model.encode(x[None]))):
        assert got.shape == want[0].shape
        assert np.linalg.norm(got - want[0]) <= 1e-2 * np.linalg.norm(want[0]), level
    _assert_a_group_gives_each_stream_s_bits(model)


@pytest.mark.parametrize("isa", INT8_ISAS)
def test_int8_window_mode_stream_mode_and_groups_give_the_same_bits(files, isa):
    """An int8 row is rounded as a whole and summed exactly, and never split between pushes: one window
    streamed in pieces and flushed is window mode's bits at every level, and a group of streams gives a
    single stream's; and every ISA's kernel sums the same integers, so it agrees with the scalar kernel's but
    for the last bits of level 0's f32 and of GELU."""
    model = reduced(files[0], "int8", isa)
    x = np.random.default_rng(4).standard_normal((1, model.config["window"])).astype(np.float32)
    window = model.encode(x[None])
    for got, want in zip(_window_streamed(model, x), window):
        np.testing.assert_array_equal(got, want[0])
    _assert_a_group_gives_each_stream_s_bits(model)
    scalar = reduced(files[0], "int8", "scalar").encode(x[None])
    for level, (got, want) in enumerate(zip(window, scalar)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"{isa} level {level}")


@pytest.mark.parametrize("precision, isa", REDUCED)
@pytest.mark.parametrize("name", ["himae-100", "himae-25"])
def test_reduced_precision_records_on_real_recordings_stay_within_the_documented_bounds(name, precision, isa):
    """Shipped weights, `himae run`'s path: per-level embedding cosine >= 0.999 in every window, heart rate
    within 0.5 BPM (or withheld in both) and the same activity class in >= 99 % of windows, quality within 0.01."""
    full, half = load_model(name), reduced(name, precision, isa)
    for path in (BUNDLED, V102S):
        url = f"sim://{path}?speed=max&duration=300"
        a = list(himae_stream.run_blocking(url, model=full, all_heads=True))
        b = list(himae_stream.run_blocking(url, model=half, all_heads=True))
        assert len(a) == len(b) > 250
        cos = [float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))
               for ra, rb in zip(a, b) for u, v in zip(ra["embeddings"], rb["embeddings"])]
        assert min(cos) >= 0.999
        pa, pb = [r["predictions"] for r in a], [r["predictions"] for r in b]
        rates = [(p["heart_rate"], q["heart_rate"]) for p, q in zip(pa, pb)]  # None: withheld by the quality gate
        assert np.mean([u is v is None or None not in (u, v) and abs(u - v) <= 0.5 for u, v in rates]) >= 0.99
        assert np.mean([p["activity"] == q["activity"] for p, q in zip(pa, pb)]) >= 0.99
        assert np.mean([abs(p["quality"] - q["quality"]) <= 0.01 for p, q in zip(pa, pb)]) >= 0.99


@pytest.mark.parametrize("precision, isa", REDUCED)
def test_reduced_precision_gap_fill_error_within_two_percent_of_f32(precision, isa):
    """1-s and 2-s gaps in the bundled finger PPG (past the normaliser's first 20 s): mean NMSE per gap
    length in reduced precision within 2 % of f32's."""
    rec = himae_stream.recordings.load(BUNDLED)
    full, half = load_model("himae-100"), reduced("himae-100", precision, isa)
    fs = float(full.config["fs"])
    x = rec.pick("PLETH").resampled(fs).signals[0][: int(200 * fs)]
    for gap_s in (1.0, 2.0):
        mask = np.zeros(x.shape, bool)
        starts = np.arange(int(25 * fs), len(x) - int(15 * fs), int(15 * fs))
        for s in starts:
            mask[s : s + int(gap_s * fs)] = True
        errs = {}
        for key, model in (("f32", full), ("bf16", half)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ImputationWarning)
                filled = impute(x, mask, model, fs=fs)[0]
            errs[key] = np.mean([np.mean((filled[s : s + int(gap_s * fs)] - x[s : s + int(gap_s * fs)]) ** 2)
                                 / np.var(x[s - int(5 * fs) : s + int(5 * fs)]) for s in starts])
        assert abs(errs["bf16"] / errs["f32"] - 1) <= 0.02, errs


def test_bf16dot_refused_by_the_command_line_in_one_line(monkeypatch, capsys, tmp_path):
    """`himae embed --precision bf16dot` where the kernels are AVX2 (as on a CPU without AVX512-BF16):
    exit 2, one line naming what runs instead, no output file."""
    if "avx2" not in supported_isas():
        pytest.skip("no AVX2 on this CPU")
    from himae_stream.cli import main

    monkeypatch.setenv("HIMAE_ISA", "avx2")
    out = tmp_path / "e.npz"
    assert main(["embed", str(BUNDLED), "-o", str(out), "--precision", "bf16dot"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["himae embed: error: precision 'bf16dot' has no avx2 kernel on this CPU (bf16dot needs "
                   "AVX512-BF16 or ARM BF16, int8 AVX2, AVX512-VNNI or ARM DotProd; bf16 runs everywhere)"]
    assert not out.exists()
