"""Plots of a metric over runs: for each run a band from the min to the max of every
bucket and a line through the bucket means, runs overlaid with a legend (the ``plot``
extra: matplotlib, imported here only).

    import steplog, steplog.plot
    with steplog.open("runs.steplog", mode="r") as store:
        steplog.plot.plot(store, [run_a, run_b], "loss", "loss.png", buckets=1000, logy=True)

The band comes from ``Store.read(buckets=N)``, whose min and max are exact over the
raw points, so a spike in a 100 M-point series shows however few pixels it gets: the
band is a translucent fill and its edges are lines a pixel wide, so a bucket whose band
is far narrower than a pixel still draws its min and its max. Buckets holding +inf or
-inf get a marker at the top or bottom edge of the axes, buckets holding NaN one along
the bottom, each kind named in the legend.
Drawing uses matplotlib's object API (``Figure``, no pyplot): it leaves the caller's
backend and figures alone, and needs no display.
"""

from __future__ import annotations

import numpy as np

X_AXES = ("step", "time", "relative")
SIZE_INCHES = (10, 5.5)
DPI = 100
BAND_ALPHA = 0.25
MARGINS = {"left": 0.08, "right": 0.98, "bottom": 0.1, "top": 0.93}   # fixed: a layout solver costs 0.1 s
SPARSE = 3   # a curve of fewer points gets markers: a lone point draws no line
EDGE_WIDTH = 72 / DPI   # points: the band's edges are a pixel wide in a PNG
EDGE_ALPHA = 0.8
# (marker, y in axes fractions, legend text) of the buckets holding values no axis shows
ODD = {"inf": ("^", 1.0, "+inf (top edge)"), "-inf": ("v", 0.0, "-inf (bottom edge)"),
       "nan": ("x", 0.025, "NaN (along the bottom)")}
ODD_COLOUR = "0.3"


def plot(store, runs: list[str], metric: str, output: str, *, context: dict | None = None, buckets: int = 1000,
         x: str = "step", logy: bool = False, labels: dict[str, str] | None = None,
         title: str | None = None):
    """Draw ``metric`` (under ``context``) of the runs ``runs`` (full run ids) into the
    file ``output``, whose extension chooses the format (png, svg, pdf, ...), and return
    the matplotlib Figure (to restyle and save again).

    Each run is one ``store.read(run, metric, context=context, buckets=buckets, x=x)``:
    x "step", "time" (wall clock, UTC) or "relative" (time since the run started).
    ``labels`` maps run ids to legend text; by default a run's name, with its id's
    first 8 digits where runs share a name, or those digits alone for a run without one.
    NaN and infinite values leave gaps in the lines, their buckets marked at the edge of
    the axes; with ``logy`` values <= 0 leave gaps too. An extension matplotlib does not
    write raises InvalidArgumentError before any read; a run without the series
    NotFoundError, as ``Store.read`` does."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if x not in X_AXES:
        from .engine.errors import InvalidArgumentError

        raise InvalidArgumentError("x", f"must be one of {X_AXES}, got {x!r}")
    output_format(output)
    tables = {run_id: store.read(run_id, metric, context=context, buckets=buckets, x=x) for run_id in runs}
    labels = labels or run_labels(store, runs)
    figure = Figure(figsize=SIZE_INCHES, dpi=DPI)
    figure.subplots_adjust(**MARGINS)
    axes = figure.add_subplot()
    unit = _time_unit(tables.values()) if x == "relative" else None
    curves = {run_id: _curve(table, x, unit) for run_id, table in tables.items()}
    if logy:
        curves = _positive(curves)
    alpha = max(0.06, BAND_ALPHA * min(1.0, 3 / max(1, len(curves))))   # many bands stay see-through
    handles, seen = [], set()
    for run_id, (xs, low, high, mean) in curves.items():
        (line,) = axes.plot(xs, mean, linewidth=1.2, label=labels.get(run_id, run_id[:8]),
                            marker="o" if len(xs) < SPARSE else None, markersize=3)
        colour = line.get_color()
        handles.append(line)
        axes.fill_between(xs, low, high, color=colour, alpha=alpha, linewidth=0)
        for edge in (low, high):   # a spike narrower than a pixel: the fill is too thin to see, its edge is not
            axes.plot(xs, edge, color=colour, linewidth=EDGE_WIDTH, alpha=EDGE_ALPHA)
        if len(xs) < SPARSE:   # a lone bucket has no edges to draw: its min..max as a line
            axes.vlines(xs, low, high, color=colour, linewidth=1.5)
        for kind, where in _odd_buckets(tables[run_id]).items():
            marker, y, _ = ODD[kind]
            axes.plot(xs[where], np.full(int(where.sum()), y), transform=axes.get_xaxis_transform(),
                      linestyle="none", marker=marker, markersize=6, color=colour, clip_on=False,
                      **({"markeredgewidth": 1.5} if marker == "x" else    # a cross is all edge
                         {"markeredgecolor": ODD_COLOUR, "markeredgewidth": 0.5}))
            seen.add(kind)
    handles += [Line2D([], [], linestyle="none", marker=ODD[kind][0], color=ODD_COLOUR, label=ODD[kind][2])
                for kind in ODD if kind in seen]
    if logy:
        axes.set_yscale("log", nonpositive="mask")
    if x == "step":
        from matplotlib.ticker import EngFormatter

        axes.xaxis.set_major_formatter(EngFormatter(sep=""))   # 2.5M, not 0.25 and 1e7 in the corner
    if not any(t.num_rows for t in tables.values()):
        axes.text(0.5, 0.5, "no points", transform=axes.transAxes, ha="center", va="center")
    axes.set_xlabel({"step": "step", "time": "time (UTC)"}.get(x) or f"time since the run started ({unit[0]})")
    axes.set_ylabel(metric)
    axes.set_title(title or f"{metric}{_context_text(context)}: mean per bucket, band from min to max")
    axes.grid(True, alpha=0.3)
    if tables:
        axes.legend(handles=handles, fontsize="small", ncols=1 + len(handles) // 13)
    figure.savefig(output)
    return figure


def output_format(output: str) -> str:
    """The image format ``output``'s extension names, one matplotlib writes (png, svg,
    pdf, ...); InvalidArgumentError naming them for any other, or for no extension."""
    import os

    from matplotlib.backend_bases import FigureCanvasBase

    from .engine.errors import InvalidArgumentError

    supported = sorted(FigureCanvasBase.get_supported_filetypes())
    extension = os.path.splitext(os.fspath(output))[1][1:].lower()
    if extension not in supported:
        said = f"an unknown extension .{extension}" if extension else "no extension"
        raise InvalidArgumentError("output", f"{os.fspath(output)!r} has {said}; the extension picks the "
                                   f"format: one of {', '.join('.' + e for e in supported)}")
    return extension


def _odd_buckets(table) -> dict:
    """{"inf" | "-inf" | "nan": a bool array of the buckets holding such a value}."""
    if not table.num_rows:
        return {}
    high, low = (table.column(name).to_numpy().astype(np.float64) for name in ("max", "min"))
    found = {"inf": high == np.inf, "-inf": low == -np.inf, "nan": table.column("nan_count").to_numpy() > 0}
    return {kind: where for kind, where in found.items() if where.any()}


def run_labels(store, runs: list[str]) -> dict[str, str]:
    """Legend text for each run id, from the store's run names (see ``labels_for``)."""
    table = store.runs()
    return labels_for(runs, dict(zip(table.column("id").to_pylist(), table.column("name").to_pylist())))


def labels_for(runs: list[str], names: dict, short: int = 8) -> dict[str, str]:
    """A run's name; "name (id prefix)" where shown runs share the name; the prefix for
    a run without a name."""
    shared = [names.get(r) for r in runs]
    return {r: (f"{names[r]} ({r[:short]})" if shared.count(names[r]) > 1 else names[r]) if names.get(r)
            else r[:short] for r in runs}


def _curve(table, x: str, unit) -> tuple:
    """Bucket midpoints and the min, max and mean columns, NaN where not finite."""
    if x == "time":
        start, end = (table.column(f"time_{side}").to_numpy() for side in ("start", "end"))
        xs = start + (end - start) // 2   # datetime64 (UTC), which matplotlib draws as dates
    else:
        start, end = (_int64(table.column(f"{x}_{side}")) for side in ("start", "end"))
        xs = start / 2 + end / 2   # in float64: no int64 overflow at the ends of the axis
        if unit is not None:
            xs = xs / unit[1]
    return (xs,) + tuple(_finite(table.column(name).to_numpy()) for name in ("min", "max", "mean"))


def _int64(column) -> np.ndarray:
    """Steps, or durations as nanoseconds."""
    import pyarrow as pa

    if pa.types.is_duration(column.type):
        column = column.cast(pa.duration("ns"))
    return column.cast(pa.int64()).to_numpy().astype(np.float64)


def _positive(curves: dict) -> dict:
    """For a log axis: values <= 0 become gaps, except a band's low end, which goes down
    to the smallest positive value drawn (the band still reaches the bottom)."""
    positive = [v[v > 0] for _, *columns in curves.values() for v in columns]
    floor = min((v.min() for v in positive if v.size), default=1.0)
    gap = lambda v: np.where(v > 0, v, np.nan)   # noqa: E731
    return {run_id: (xs, np.where(low > 0, low, np.where(high > 0, floor, np.nan)), gap(high), gap(mean))
            for run_id, (xs, low, high, mean) in curves.items()}


def _finite(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    return np.where(np.isfinite(values), values, np.nan)


def _time_unit(tables) -> tuple[str, float]:
    """Seconds, minutes or hours (and nanoseconds in one), whichever keeps the longest
    run's axis readable."""
    longest = max((_int64(t.column("relative_end")).max() for t in tables if t.num_rows), default=0.0)
    for name, size in (("h", 3600e9), ("min", 60e9)):
        if longest >= 2 * size:
            return name, size
    return "s", 1e9


def _context_text(context: dict | None) -> str:
    if not context:
        return ""
    return " {" + ", ".join(f"{k}={v}" for k, v in context.items()) + "}"
