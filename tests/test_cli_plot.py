"""``steplog plot`` and steplog.plot: images that decode, show every run in its colour,
and keep the spikes the band must not hide."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import steplog

pytest.importorskip("matplotlib")
import matplotlib.collections  # noqa: E402
import matplotlib.image  # noqa: E402

import steplog.plot  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POINTS = 20_000
SPIKE = 40.0
BLUE, ORANGE = np.array([31, 119, 180]) / 255, np.array([255, 127, 14]) / 255   # matplotlib's C0, C1


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "steplog", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs, "low" (values in [-0.1, 0.9]) and "high" (in [2, 3], one spike, a NaN, an inf)."""
    path = str(tmp_path_factory.mktemp("plot") / "runs.steplog")
    steps = np.arange(POINTS)
    ids = []
    with steplog.open(path) as store:
        for name, offset in (("low", -0.1), ("high", 2.0)):
            values = offset + 0.5 + 0.5 * np.sin(steps / 2000)
            if name == "high":
                values[[12_345, 100, 200]] = SPIKE, np.nan, np.inf
            with store.start_run(experiment="plots", name=name) as run:
                run.log_batch("loss", steps, values)
                run.log("loss", 0.5, step=0, context={"subset": "val"})
                run.log("loss", 0.25, step=POINTS, context={"subset": "val"})
            ids.append(run.id)
    return path, ids


def near(image: np.ndarray, colour: np.ndarray) -> int:
    return int((np.abs(image[..., :3] - colour).max(axis=-1) < 0.08).sum())


def test_two_runs_overlay_in_two_colours(runs, tmp_path):
    path, ids = runs
    out = str(tmp_path / "loss.png")
    done = cli("plot", path, ",".join(i[:10] for i in ids), "loss", "--buckets", "200", "-o", out)
    assert done.returncode == 0, done.stderr
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].var() > 0
    assert near(image, BLUE) > 200 and near(image, ORANGE) > 200   # each run's line is there


def test_band_keeps_the_spike_and_labels_name_the_runs(runs, tmp_path):
    path, ids = runs
    with steplog.open(path, mode="r") as store:
        figure = steplog.plot.plot(store, ids, "loss", str(tmp_path / "loss.svg"), buckets=50)
    axes = figure.axes[0]
    texts = [t.get_text() for t in axes.get_legend().get_texts()]
    assert texts[:2] == ["low", "high"] and len(texts) == 4   # and the kinds of odd buckets "high" has
    assert "+inf" in texts[2] and "NaN" in texts[3]
    assert axes.get_ylim()[1] >= SPIKE      # a spike at one step of 20,000 still reaches the top
    assert axes.get_ylim()[0] <= -0.1       # the low run's minimum
    assert axes.get_xlabel() == "step" and axes.get_ylabel() == "loss" and "loss" in axes.get_title()
    assert (tmp_path / "loss.svg").read_text().lstrip().startswith("<?xml")


def test_log_scale_draws_bands_above_zero_only(runs, tmp_path):
    path, ids = runs
    with steplog.open(path, mode="r") as store:
        figure = steplog.plot.plot(store, ids, "loss", str(tmp_path / "log.png"), buckets=100, logy=True)
    axes = figure.axes[0]
    assert axes.get_yscale() == "log"
    for band in axes.collections:   # the low run dips below 0: its band stops at the smallest value > 0
        if not isinstance(band, matplotlib.collections.PolyCollection):
            continue
        for outline in band.get_paths():
            assert (outline.vertices[:, 1] > 0).all()
    assert axes.get_ylim()[1] >= SPIKE


def test_context_relative_axis_and_log_scale(runs, tmp_path):
    path, ids = runs
    out = str(tmp_path / "val.png")
    done = cli("plot", path, ids[0], "loss", "--context", "subset=val", "--x", "relative", "--logy", "-o", out)
    assert done.returncode == 0, done.stderr
    assert matplotlib.image.imread(out)[..., :3].var() > 0
    done = cli("plot", path, ids[0], "lost", "-o", str(tmp_path / "x.png"))
    assert done.returncode == 1 and "no series 'lost'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.png").exists()


def test_labels_tell_runs_of_one_name_apart():
    names = {"a" * 32: "lr=0.1", "b" * 32: "lr=0.1", "c" * 32: None, "d" * 32: "lr=1"}
    assert steplog.plot.labels_for(list(names), names, 9) == {
        "a" * 32: "lr=0.1 (aaaaaaaaa)", "b" * 32: "lr=0.1 (bbbbbbbbb)", "c" * 32: "ccccccccc", "d" * 32: "lr=1"}


LONG = 100_000


def chromatic(image: np.ndarray) -> np.ndarray:
    """Where a pixel has colour: a run's, not the white, the grey grid or the black text."""
    rgb = image[..., :3]
    return rgb.max(axis=-1) - rgb.min(axis=-1) > 0.15


def pixel(figure, x, y, axes_y: bool = False) -> tuple[int, int]:
    """(row, column) in the saved PNG of the point (x, y): data coordinates, or with
    ``axes_y`` x in data and y as a fraction of the axes' height."""
    axes = figure.axes[0]
    transform = axes.get_xaxis_transform() if axes_y else axes.transData
    px, py = transform.transform((x, y))
    return int(round(figure.bbox.height - py)), int(round(px))


@pytest.fixture(scope="module")
def long_runs(tmp_path_factory):
    """A flat 0.05 curve of LONG steps with one spike to 1.0; a curve with a +inf, a -inf
    and a NaN. Returns (path, ids, the steps of the odd values)."""
    path = str(tmp_path_factory.mktemp("long") / "runs.steplog")
    steps = np.arange(LONG)
    flat = np.full(LONG, 0.05)
    flat[61_234] = 1.0
    odd = 0.5 + 0.2 * np.sin(steps / 5000)
    at = {"spike": 61_234, "inf": 30_000, "-inf": 80_000, "nan": 70_000}
    odd[[at["inf"], at["-inf"], at["nan"]]] = np.inf, -np.inf, np.nan
    with steplog.open(path) as store:
        for name, values in (("flat", flat), ("odd", odd)):
            with store.start_run(name=name) as run:
                run.log_batch("loss", steps, values)
    with steplog.open(path, mode="r") as store:
        ids = store.runs().column("id").to_pylist()
    return path, ids, at


def test_a_spike_at_one_step_of_100000_reaches_the_top(long_runs, tmp_path):
    path, ids, at = long_runs
    out = str(tmp_path / "spike.png")
    with steplog.open(path, mode="r") as store:
        figure = steplog.plot.plot(store, ids[:1], "loss", out)   # 1000 buckets: 100 steps each
    coloured = chromatic(matplotlib.image.imread(out))
    top, column = pixel(figure, at["spike"], 0.95)
    low, _ = pixel(figure, at["spike"], 0.6)
    assert coloured[top - 1:low, column - 2:column + 3].any(axis=1).all()   # every row from 0.6 to 0.95
    _, away = pixel(figure, 20_000, 0.95)
    assert not coloured[top - 1:low, away - 2:away + 3].any()               # and nowhere else


def test_inf_and_nan_buckets_get_markers_at_the_edges(long_runs, tmp_path):
    path, ids, at = long_runs
    out = str(tmp_path / "odd.png")
    with steplog.open(path, mode="r") as store:
        figure = steplog.plot.plot(store, ids[1:], "loss", out)
    coloured = chromatic(matplotlib.image.imread(out))
    for kind, y in (("inf", 1.0), ("-inf", 0.0), ("nan", 0.025)):
        row, column = pixel(figure, at[kind], y, axes_y=True)
        assert coloured[row - 3:row + 4, column - 3:column + 4].sum() >= 6, kind   # a marker there
        _, away = pixel(figure, at[kind] + 9000, y, axes_y=True)
        assert not coloured[row - 3:row + 4, away - 3:away + 4].any(), kind     # not a line along the edge
    texts = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert texts[0] == "odd" and any("+inf" in t for t in texts) and any("-inf" in t for t in texts) \
        and any("NaN" in t for t in texts)
    with steplog.open(path, mode="r") as store:   # a clean run gets no such legend entries
        figure = steplog.plot.plot(store, ids[:1], "loss", str(tmp_path / "flat.png"))
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["flat"]


def test_an_unknown_extension_is_a_usage_error_before_any_read(long_runs, tmp_path):
    path, ids, _ = long_runs
    for name in ("out.xyz", "out"):
        done = cli("plot", str(tmp_path / "no-store"), ids[0], "loss", "-o", str(tmp_path / name))
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "-o" in done.stderr and ".png" in done.stderr and ".svg" in done.stderr and ".pdf" in done.stderr
        assert not (tmp_path / name).exists() and not (tmp_path / "no-store").exists()
