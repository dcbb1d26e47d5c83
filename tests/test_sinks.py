"""File sinks never destroy data: the target is replaced only by a run that ended well, a failed run
keeps what it wrote beside it, npz parts survive a crash, and every npz array loads without pickle."""

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from himae_stream.errors import HimaeError
from himae_stream.sinks import SinkError, as_sink_url, merge_parts, open_sink, shortest_float32

CLASSES = ["rest", "moderate", "fast"]


def record(i: int) -> dict:
    """A window record shaped like the pipeline's (README's example), embeddings as float32 arrays."""
    rng = np.random.default_rng(i)
    p = rng.dirichlet(np.ones(3))
    return {
        "window": i, "start": 100 * i, "end": 100 * i + 800, "t_start": 1.7e9 + i, "t_end": 1.7e9 + i + 7.99,
        "lost_fraction": 0.0,
        "predictions": {"heart_rate": 60.0 + i, "activity": CLASSES[int(np.argmax(p))],
                        "activity_p": dict(zip(CLASSES, p.tolist())), "quality": -1.4},
        "embeddings": [rng.standard_normal(c).astype(np.float32) for c in (16, 32, 64, 128, 256)],
        "imputed": i % 2, "latency_ms": 0.5,
    }


def write(url: str, count: int, first: int = 0):
    sink = open_sink(url)
    for i in range(first, first + count):
        sink.write(record(i))
    return sink


def windows_in(path) -> list[int]:
    """The window indices a jsonl, csv or npz file holds."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return z["window"].tolist()
    if path.suffix == ".csv":
        return [int(line.split(",")[0]) for line in path.read_text().splitlines()[1:]]
    return [json.loads(line)["window"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("kind", ["jsonl", "csv", "npz"])
def test_target_is_replaced_only_when_the_run_ends_well(tmp_path, kind):
    target = tmp_path / f"out.{kind}"
    target.write_bytes(b"the user's earlier results")
    sink = write(f"{kind}://{target}", 3)
    assert target.read_bytes() == b"the user's earlier results", "nothing touches the target during the run"
    sink.close()
    assert windows_in(target) == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name], "no partial file or parts left behind"


@pytest.mark.parametrize("kind", ["jsonl", "csv", "npz"])
def test_a_failed_run_keeps_the_target_and_what_it_wrote(tmp_path, kind):
    target = tmp_path / f"out.{kind}"
    target.write_bytes(b"the user's earlier results")
    kept = write(f"{kind}://{target}", 3).abort()
    assert target.read_bytes() == b"the user's earlier results"
    assert kept == tmp_path / f"out.partial.{kind}" and windows_in(kept) == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, kept.name])


@pytest.mark.parametrize("kind", ["jsonl", "csv", "npz"])
def test_a_run_without_records_creates_nothing(tmp_path, kind):
    assert write(f"{kind}://{tmp_path / f'out.{kind}'}", 0).abort() is None
    write(f"{kind}://{tmp_path / f'out.{kind}'}", 0).close()
    assert list(tmp_path.iterdir()) == []


def test_partial_files_never_overwrite_each_other(tmp_path):
    earlier = tmp_path / "out.partial.csv"
    earlier.write_text("windows an earlier crashed run kept\n")
    kept = write(f"csv://{tmp_path / 'out.csv'}", 2).abort()
    assert kept.name == "out.partial-2.csv" and windows_in(kept) == [0, 1]
    assert earlier.read_text() == "windows an earlier crashed run kept\n"


def test_append_mode_adds_to_the_file(tmp_path):
    jsonl, csv_path = tmp_path / "out.jsonl", tmp_path / "out.csv"
    for path in (jsonl, csv_path):
        write(f"{path.suffix[1:]}://{path}", 2).close()
    with open(jsonl, "a") as f:
        f.write('{"window": 99, "cut sh')  # a line a crash cut short
    for path in (jsonl, csv_path):
        write(f"{path.suffix[1:]}://{path}?mode=append", 2, first=2).close()
    assert windows_in(csv_path) == [0, 1, 2, 3], "one header, rows appended"
    lines = jsonl.read_text().splitlines()
    assert lines[2] == '{"window": 99, "cut sh' and [json.loads(line)["window"] for line in lines[3:]] == [2, 3]


def test_append_refuses_a_csv_of_other_columns(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("window,start,something_else\n0,0,1\n")
    sink = open_sink(f"csv://{path}?mode=append")
    with pytest.raises(SinkError, match="columns differ"):
        sink.write(record(0))
    assert path.read_text() == "window,start,something_else\n0,0,1\n"


def test_npz_parts_written_during_the_run_survive_a_crash(tmp_path):
    target = tmp_path / "out.npz"
    sink = write(f"npz://{target}?part=2", 5)
    # the process dies here: no close(), no abort()
    parts = sorted((tmp_path / "out.npz.parts").glob("part-*.npz"))
    assert [p.name for p in parts] == ["part-000000.npz", "part-000001.npz"]
    assert [w for p in parts for w in windows_in(p)] == [0, 1, 2, 3], "only the windows after the last part are lost"
    recovered = merge_parts(parts)
    assert recovered["window"].tolist() == [0, 1, 2, 3] and recovered["level4"].shape == (4, 256)
    sink.close()
    assert windows_in(target) == [0, 1, 2, 3, 4] and not (tmp_path / "out.npz.parts").exists()


def test_npz_arrays_load_without_pickle_with_integer_indices(tmp_path):
    target = tmp_path / "out.npz"
    write(f"npz://{target}?part=2", 3).close()  # merged from parts: the same arrays as one part
    with np.load(target, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for name in ("window", "start", "end", "imputed"):
        assert arrays[name].dtype == np.int64, name
    assert arrays["start"].tolist() == [0, 100, 200] and arrays["imputed"].tolist() == [0, 1, 0]
    assert arrays["t_start"].dtype == arrays["latency_ms"].dtype == np.float64
    assert arrays["pred_activity_p"].dtype == np.float64 and arrays["pred_activity_p"].shape == (3, 3)
    assert arrays["pred_activity_classes"].dtype.kind == "U" and arrays["pred_activity_classes"].tolist() == CLASSES
    assert arrays["pred_activity"].dtype.kind == "U"
    for i in range(3):
        p = record(i)["predictions"]["activity_p"]
        assert arrays["pred_activity_p"][i].tolist() == [p[c] for c in CLASSES]
        assert arrays["pred_activity"][i] == record(i)["predictions"]["activity"]
    assert arrays["level0"].dtype == np.float32 and arrays["level0"].shape == (3, 16)


def unwritable_folder(tmp_path):
    """A folder this process cannot create files in: a read-only one, or, for root (whom file
    permissions do not bind), sysfs."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder if os.geteuid() != 0 else "/sys"


@pytest.mark.parametrize("kind", ["jsonl", "csv", "npz"])
def test_a_target_that_cannot_be_written_is_refused_when_opened(tmp_path, kind):
    for url, message in [
        (f"{kind}://{unwritable_folder(tmp_path)}/out.{kind}", "cannot write in"),
        (f"{kind}://{tmp_path}/missing/out.{kind}", "does not exist"),
        (f"{kind}://{tmp_path}", "is a folder"),
    ]:
        with pytest.raises(SinkError, match=message):
            open_sink(url)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["read-only"]


@pytest.mark.parametrize("url, message", [
    ("csv://{dir}/out.csv?mode=overwrite", "mode must be replace or append"),
    ("npz://{dir}/out.npz?mode=append", "unknown parameter"),
    ("npz://{dir}/out.npz?part=0", "part: expected an integer >= 1, got '0'"),
    ("jsonl://-?mode=append", "needs a file"),
])
def test_bad_sink_parameters_are_refused(tmp_path, url, message):
    with pytest.raises(HimaeError, match=message):
        open_sink(url.format(dir=tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["jsonl", "csv", "npz"])
def test_a_files_path_opens_the_sink_its_extension_names(tmp_path, kind):
    path = tmp_path / f"out.{kind}"
    write(str(path), 3).close()
    assert windows_in(path) == [0, 1, 2]
    assert as_sink_url("-") == "jsonl://-" and as_sink_url(f"s.{kind.upper()}") == f"{kind}://s.{kind.upper()}"


@pytest.mark.parametrize("text", ["out.txt", "out", "serial:/dev/x"])
def test_a_path_without_a_sink_format_is_refused_in_one_line(tmp_path, text):
    with pytest.raises(SinkError, match=r"neither a sink URL \(jsonl://.*\) nor a file ending in .jsonl, .csv, .npz"):
        open_sink(str(tmp_path / text) if text.startswith("out") else text)
    assert list(tmp_path.iterdir()) == []


def test_an_npz_written_in_pieces_is_the_one_numpy_writes_whole(tmp_path):
    """Pieces of an array (`himae embed` writes a recording's rows at a time) give the file np.savez gives
    for their concatenation, and np.load reads it; pieces that do not stack are refused."""
    from himae_stream.sinks import replace_with_npz

    rng = np.random.default_rng(0)
    pieces = [rng.normal(size=(n, 5)).astype(np.float32) for n in (3, 0, 7)]
    arrays = {"names": np.array(["a", "bcd"]), "fs": np.array(25.0), "mode": np.array("stream"),
              "rows": pieces, "index": [np.arange(3), np.arange(0), np.arange(7)]}
    replace_with_npz(tmp_path / "pieces.npz", arrays)
    np.savez(tmp_path / "whole.npz", **{k: np.concatenate(v) if isinstance(v, list) else v for k, v in arrays.items()})
    with np.load(tmp_path / "pieces.npz") as mine, np.load(tmp_path / "whole.npz") as theirs:
        assert mine.files == theirs.files
        for key in theirs.files:
            assert mine[key].dtype == theirs[key].dtype and np.array_equal(mine[key], theirs[key]), key
    replace_with_npz(tmp_path / "widened.npz", {"labels": [np.array(["rest"]), np.array(["active"])]})
    with np.load(tmp_path / "widened.npz") as z:
        assert z["labels"].tolist() == ["rest", "active"]  # as np.concatenate widens them
    (tmp_path / "widened.npz").unlink()
    with pytest.raises(ValueError, match="the pieces of 'rows' differ"):
        replace_with_npz(tmp_path / "bad.npz", {"rows": [np.zeros((2, 5)), np.zeros((2, 4))]})
    assert not (tmp_path / "bad.npz").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "pieces.npz", "whole.npz"]


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_text_sinks_write_each_float32_as_its_shortest_decimal(tmp_path, kind):
    """Embeddings read back from the text as the very float32 values, each in the fewest digits that do
    (numpy's own shortest float32 text: 0.5529977, not the exact 0.5529977083206177)."""
    path = tmp_path / f"out.{kind}"
    write(f"{kind}://{path}", 3).close()
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines if kind == "jsonl" else lines[1:]):
        want = np.concatenate(record(i)["embeddings"])
        if kind == "jsonl":
            texts = line.split('"embeddings":[[')[1].split("]]")[0].replace("],[", ",").split(",")
        else:
            texts = line.split(",")[-want.size:]
        assert np.array_equal(np.array(texts, np.float64).astype(np.float32), want)
        assert [significant(t) for t in texts] == [significant(str(v)) for v in want]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=50))
def test_shortest_float32_reads_back_as_the_same_float32(values):
    """Any finite float32, from the smallest subnormal to the largest, as text reads back the same; within
    the magnitudes a record carries, in no more digits than numpy's shortest."""
    a = np.array(values, np.float32)
    texts = [repr(v) for v in shortest_float32(a).tolist()]
    assert np.array_equal(np.array(texts, np.float64).astype(np.float32), a)
    for text, v in zip(texts, a):
        if 1e-12 <= abs(v) <= 1e12:
            assert significant(text) <= significant(str(v)), (text, v)


def significant(text: str) -> int:
    """Significant digits of a number's text (1250000.0 and 1.25e+06: 3)."""
    return len(text.split("e")[0].lstrip("-").replace(".", "").strip("0")) or 1
