"""Window-mode decoder: parity with the PyTorch model on every ISA, masking, errors, allocations."""

import numpy as np
import pytest
import torch
from conftest import WRIST_WALK

from himae_stream.model import load_model, supported_isas
from himae_stream.normalize import normalize
from himae_stream.recordings import load
from training import HiMAE, export_model, get_config
from training.model import randomize_batchnorm

TOL = 1e-4


def random_model(config: dict, seed: int) -> HiMAE:
    """A HiMAE with random weights and random BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    return randomize_batchnorm(HiMAE(config), seed).eval()


def torch_reconstruct(model: HiMAE, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module", params=["himae-100", "himae-25"])
def exported(request, tmp_path_factory):
    model = random_model(get_config(request.param), seed=7)
    path = tmp_path_factory.mktemp("models") / f"{request.param}.himae"
    export_model(model, path)
    return model, path


def real_windows(config: dict, count: int) -> np.ndarray:
    """`count` consecutive windows of a wrist PPG recording, stream-normalised at the model rate."""
    rec = load(WRIST_WALK, channels="PPG").resampled(config["fs"])
    z = normalize(rec.signals, config["normalizer"], config["fs"])
    L = config["window"]
    start = 3 * L  # past the normaliser's start-up (30 s)
    return np.stack([z[:, start + i * L : start + (i + 1) * L] for i in range(count)]).astype(np.float32)


@pytest.mark.parametrize("isa", supported_isas())
def test_parity_random_and_real_windows(exported, isa):
    model, path = exported
    engine = load_model(path, isa)
    L = model.config["window"]
    rng = np.random.default_rng(1)
    for x in (rng.uniform(-1, 1, (3, 1, L)).astype(np.float32), real_windows(model.config, 3)):
        got = engine.reconstruct(x)
        assert got.shape == x.shape and got.dtype == np.float32
        err = np.abs(got - torch_reconstruct(model, x)).max()
        assert err <= TOL, f"{isa}: max abs error {err}"


@pytest.mark.parametrize(
    "kernel, window, channels, in_channels",
    [(3, 77, [4, 8, 16], 2), (5, 64, [6], 1), (7, 101, [4, 8], 3), (5, 257, [64, 128], 32)],
)
def test_parity_other_configurations(tmp_path, kernel, window, channels, in_channels):
    """Any configuration a file describes: kernel 3 and 7 give asymmetric phase taps, odd windows crop;
    the last one takes Winograd for every kernel-5 conv, over odd lengths (129 and 65 rows)."""
    config = get_config(
        "himae-25", kernel_size=kernel, window=window, channels=channels, in_channels=in_channels,
        channel_names=[f"CH{i}" for i in range(in_channels)],
    )
    model = random_model(config, seed=3)
    export_model(model, tmp_path / "m.himae")
    x = np.random.default_rng(2).uniform(-1, 1, (2, in_channels, window)).astype(np.float32)
    ref = torch_reconstruct(model, x)
    for isa in supported_isas():
        err = np.abs(load_model(tmp_path / "m.himae", isa).reconstruct(x) - ref).max()
        assert err <= TOL, f"{isa}: max abs error {err}"


def test_mask_zeroes_samples_before_the_encoder(exported):
    model, path = exported
    engine = load_model(path)
    L = model.config["window"]
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (1, L)).astype(np.float32)
    mask = rng.random((1, L)) < 0.8
    zeroed = np.where(mask, 0, x).astype(np.float32)
    got = engine.reconstruct(x, mask)
    assert np.array_equal(got, engine.reconstruct(zeroed))
    assert np.abs(got - torch_reconstruct(model, zeroed[None])[0]).max() <= TOL
    # An (L,) mask applies to every window and channel of a batch.
    batch = np.stack([x, 0.5 * x])
    both = engine.reconstruct(batch, mask[0])
    assert np.array_equal(both[0], got)
    assert np.array_equal(both[1], engine.reconstruct(np.where(mask, 0, 0.5 * x).astype(np.float32)))
    assert not np.array_equal(got, engine.reconstruct(x)), "the mask must change the input"


def test_batch_equals_single_windows(exported):
    model, path = exported
    engine = load_model(path)
    x = np.random.default_rng(5).uniform(-1, 1, (4, 1, model.config["window"])).astype(np.float32)
    batch = engine.reconstruct(x)
    for b in range(4):
        assert np.array_equal(batch[b], engine.reconstruct(x[b]))


def test_bad_masks_and_inputs(exported):
    model, path = exported
    engine = load_model(path)
    L = model.config["window"]
    x = np.zeros((1, L), np.float32)
    with pytest.raises(ValueError, match="mask shape"):
        engine.reconstruct(x, np.zeros(L - 1, bool))
    with pytest.raises(ValueError, match="mask shape"):
        engine.reconstruct(x, np.zeros((2, 1, L), bool))
    with pytest.raises(ValueError, match="boolean"):
        engine.reconstruct(x, np.zeros(L, np.int64))
    with pytest.raises(ValueError, match="shape"):
        engine.reconstruct(np.zeros((1, L + 1), np.float32))


def test_no_allocation_during_reconstruct(exported):
    _model, path = exported
    engine = load_model(path)
    x = np.zeros((2, 1, engine.config["window"]), np.float32)
    engine.reconstruct(x)
    before = engine.alloc_count
    for _ in range(5):
        engine.reconstruct(x)
    assert engine.alloc_count == before


def test_file_without_decoder_is_refused(tmp_path):
    model = random_model(get_config("himae-25", decoder=False), seed=1)
    export_model(model, tmp_path / "enc.himae")
    engine = load_model(tmp_path / "enc.himae")
    with pytest.raises(ValueError, match="no decoder"):
        engine.reconstruct(np.zeros((1, 250), np.float32))


def test_nan_in_window_mode_is_refused_by_encode_and_masked_by_reconstruct(exported):
    """Window mode has no lost-sample mask for the encoder: a NaN would spread through every
    level, so encode/embed refuse it; reconstruct treats it as a masked (lost) sample."""
    _, path = exported
    model = load_model(path)
    L = model.config["window"]
    x = np.random.default_rng(3).uniform(-1, 1, (2, 1, L)).astype(np.float32)
    bad = x.copy()
    bad[0, 0, 10] = np.nan
    bad[1, 0, 20:23] = np.inf
    for call in (model.encode, model.embed):
        with pytest.raises(ValueError, match=r"input has 4 NaN or Inf sample\(s\)"):
            call(bad)
    mask = np.zeros(x.shape, bool)
    mask[0, 0, 10] = mask[1, 0, 20:23] = True
    np.testing.assert_array_equal(model.reconstruct(bad), model.reconstruct(x, mask))
    np.testing.assert_array_equal(model.reconstruct(bad, mask), model.reconstruct(x, mask))
    assert np.isfinite(model.reconstruct(bad)).all()
