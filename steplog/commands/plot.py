"""``steplog plot PATH RUN[,RUN...] METRIC -o FILE``: a metric of runs as a picture."""

from __future__ import annotations

from ._parsing import add_command, context_dict, context_item, positive_int


def add_parser(sub) -> None:
    p = add_command(sub, "plot", "plot a metric of one or more runs to an image file", "\n".join([
        "steplog plot runs.steplog 3f2a9c41,8d0e77b2 loss -o loss.png",
        "steplog plot runs.steplog 3f2a9c41 loss --context subset=val --logy --x relative -o val.svg"]),
        description="Plot a metric of runs, overlaid: for each run the band from min to max of every bucket "
                    "(exact, its edges drawn a pixel wide: no spike is hidden) and the line of the bucket means, "
                    "with a legend of run names; buckets holding +inf, -inf or NaN are marked at the edge of the "
                    "axes. "
                    "Needs matplotlib (pip install 'steplog[plot]'). The output's extension picks the format.")
    p.add_argument("path", help="store directory")
    p.add_argument("runs", metavar="RUN[,RUN...]", help="run ids, unique prefixes or unique run names, comma-separated")
    p.add_argument("metric", help="metric name")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="image file to write (.png, .svg, .pdf, ...: its extension picks the format)")
    p.add_argument("--buckets", type=positive_int, default=1000, help="buckets per run (default 1000)")
    p.add_argument("--context", action="append", type=context_item, metavar="KEY=VALUE",
                   help="the series' context, may repeat (rank=3 is the number 3, subset=val the text 'val')")
    p.add_argument("--logy", action="store_true", help="logarithmic y axis")
    p.add_argument("--x", choices=("step", "time", "relative"), default="step",
                   help="x axis: step (default), wall-clock time, or time since the run started")
    p.add_argument("--title", help="title (default: the metric and its context)")
    p.set_defaults(handler=run, parser=p)


def run(args) -> int:
    from .. import plot as plotting
    from ._runs import RunIds, open_store

    prefixes = [p for p in (t.strip() for t in args.runs.split(",")) if p]
    if not prefixes:
        args.parser.error("RUN: give at least one run id")
    try:
        import matplotlib  # noqa: F401  (a clear message before any work)
    except ImportError:
        args.parser.exit(1, "steplog: error: plot needs matplotlib: pip install 'steplog[plot]'\n")
    from ..engine.errors import InvalidArgumentError

    try:
        plotting.output_format(args.output)
    except InvalidArgumentError as exc:   # before any reading: a usage error
        args.parser.error(f"-o/--output: {str(exc).partition(': ')[2]}")
    with open_store(args.path) as store:
        runs = store.runs()
        ids = RunIds.of(store, runs)
        chosen = list(dict.fromkeys(ids.resolve(p) for p in prefixes))
        labels = plotting.labels_for(chosen, ids.names, ids.abbrev_length(chosen))
        plotting.plot(store, chosen, args.metric, args.output, context=context_dict(args.context),
                      buckets=args.buckets, x=args.x, logy=args.logy, labels=labels, title=args.title)
    print(f"wrote {args.output}")
    return 0
