"""The imputation evaluation script: its baseline fills and an end-to-end run on a real recording."""

import numpy as np
import torch
from conftest import FIXTURES

from benchmarks import imputation as ev
from training import HiMAE, export_model, get_config

FS = 25.0


def test_linear_fill_is_exact_on_a_ramp():
    x = np.linspace(-3.0, 7.0, 200)
    mask = np.zeros(200, bool)
    mask[50:90] = True
    np.testing.assert_allclose(ev.fill_linear(np.where(mask, 0, x), mask, FS), x, atol=1e-12)


def test_zero_fill_is_the_local_mean():
    rng = np.random.default_rng(0)
    x = 5.0 + rng.standard_normal(400)
    mask = np.zeros(400, bool)
    mask[200:210] = True
    filled = ev.fill_zero(x, mask, FS)
    around = np.r_[x[150:200], x[210:260]]
    np.testing.assert_allclose(filled[200:210], around.mean())
    assert np.array_equal(filled[~mask], x[~mask])


def test_previous_beat_template_repeats_the_cycle():
    period = 20  # samples: 75 bpm at 25 Hz
    t = np.arange(1000)
    x = np.sin(2 * np.pi * t / period) + 0.3 * np.sin(4 * np.pi * t / period + 1.0)
    mask = np.zeros(1000, bool)
    mask[600:650] = True  # 2.5 cycles
    assert ev.period(x[400:600], FS) == period
    filled = ev.fill_template(np.where(mask, 0, x), mask, FS)
    np.testing.assert_allclose(filled, x, atol=1e-9)


def test_script_writes_table_and_figure(tmp_path):
    torch.manual_seed(0)
    model_file = tmp_path / "h25.himae"
    export_model(HiMAE(get_config("himae-25")).eval(), model_file)
    out, doc = tmp_path / "out", tmp_path / "doc.md"
    doc.write_text(f"# Title\n\n{ev.BEGIN}\nold numbers\n{ev.END}\n\nafter\n")
    rc = ev.main([
        "--model", str(model_file), "--data", str(FIXTURES), "--recordings", "wrist_s5_low_resistance_bike.npz",
        "--channels", "PPG", "--gaps", "3", "--patch-windows", "2", "--out", str(out), "--cache", "",
        "--doc", str(doc),
    ])
    assert rc == 0
    table = (out / "h25" / "imputation.md").read_text()
    for condition in ("0.1 s gap", "0.5 s gap", "1 s gap", "2 s gap", "80 % patch mask"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {condition} |"))
        cells = row.strip("|").split("|")
        assert int(cells[1]) > 0
        assert all(np.isfinite(float(c.split()[0])) for c in cells[2:-1:2]), row
    assert (out / "h25" / "imputation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = doc.read_text()  # the generated section is replaced, the rest of the document kept
    assert text.startswith("# Title\n") and text.endswith("after\n") and "old numbers" not in text
    assert "| recordings | 1 (1) |" in text


def test_device_groups_are_drawn_reproducibly(data_dir):
    for group in ev.GROUPS:
        first, again = ev.draw(data_dir, group, 0), ev.draw(data_dir, group, 0)
        assert first == again and first, group.name
        if group.per_pattern:
            assert len(first) == group.per_pattern * len(group.patterns)
    assert ev.draw(data_dir, ev.GROUPS[2], 1) != ev.draw(data_dir, ev.GROUPS[2], 0)
