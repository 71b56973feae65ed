"""What the commands print: tables for people, CSV / JSON lines / Parquet for programs,
and progress bars.

A table on a terminal is drawn by rich and fits its width; anywhere else (a pipe, a
file) it is plain text aligned with spaces, with no escape codes. Progress bars go to
stderr, only when stderr is a terminal and the command was not given ``--quiet``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import sys
from typing import Callable, Iterator, Sequence

Progress = Callable[[int, "int | None"], None]   # progress(done, total)
MIN_CUT = 8        # a column cut to fit a terminal keeps at least this many characters
SCREEN_ROWS = 40   # a table of more rows shows its first and last SCREEN_ROWS / 2


def is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):   # no isatty, or closed
        return False


def cell(value) -> str:
    """A value as a person reads it in a table cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)   # nan, inf, -inf
    if isinstance(value, datetime.datetime):
        return local_time(value)
    if isinstance(value, datetime.timedelta):
        return duration(value.total_seconds())
    return str(value)


def local_time(value: datetime.datetime, zone: bool = False, seconds: bool = True) -> str:
    """A timestamp in this machine's time zone (as ``git log`` shows it)."""
    return value.astimezone().strftime("%Y-%m-%d %H:%M" + (":%S" if seconds else "") + (" %z" if zone else ""))


def duration(seconds: float) -> str:
    """A duration for people: 0.42s, 12.3s, 4m05s, 2h07m, 3d04h."""
    if seconds < 60:
        return f"{seconds * 1e3:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours == 0:
        return f"{minutes}m{secs:02d}s"
    days, hours = divmod(hours, 24)
    return f"{hours}h{minutes:02d}m" if days == 0 else f"{days}d{hours:02d}h"


def screen_rows(table) -> list[list[str]]:
    """The cells of an Arrow table's rows as a screen shows them: all, or the first and
    last SCREEN_ROWS / 2 around a row of "..."; times to the microsecond, in UTC."""
    half = SCREEN_ROWS // 2
    if table.num_rows <= SCREEN_ROWS:
        return [_row_cells(row) for row in table.to_pylist()]
    head = [_row_cells(row) for row in table.slice(0, half).to_pylist()]
    tail = [_row_cells(row) for row in table.slice(table.num_rows - half).to_pylist()]
    return head + [["..."] * table.num_columns] + tail


def _row_cells(row: dict) -> list[str]:
    return [iso_time(v) if isinstance(v, datetime.datetime) else cell(v) for v in row.values()]


def iso_time(value: datetime.datetime) -> str:
    """A timestamp to the microsecond, ISO 8601: in UTC with a Z, as csv writes it (one
    without a zone, as it is)."""
    if value.tzinfo is None:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int] = frozenset(),
                fixed: set[int] = frozenset(), stream=None) -> None:
    """Rows of cells (strings) under headers; columns whose index is in ``right`` are
    aligned right (numbers). On a terminal too narrow for the table, the columns in
    ``fixed`` keep their width and the others are cut (to no less than MIN_CUT
    characters) with an ellipsis; where even that does not fit, each row is printed as
    lines of "column  value"."""
    stream = stream or sys.stdout
    if is_terminal(stream):
        _rich_table(headers, rows, right, fixed, stream)
        return
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))]
        stream.write("  ".join(cells).rstrip() + "\n")


def print_arrow(table, stream=None) -> None:
    """An Arrow table for people: its columns (numbers and times aligned right) and the
    rows of ``screen_rows``."""
    import pyarrow as pa

    stream = stream or sys.stdout
    right = {i for i, field in enumerate(table.schema) if pa.types.is_integer(field.type) or
             pa.types.is_floating(field.type) or pa.types.is_decimal(field.type) or pa.types.is_temporal(field.type)}
    print_table(table.column_names, screen_rows(table), right=right, stream=stream)
    if table.num_rows > SCREEN_ROWS:
        stream.write(f"{table.num_rows:,} rows (--format csv writes them all)\n")


def _rich_table(headers, rows, right, fixed, stream) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=stream, highlight=False)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    least = [w if i in fixed else min(w, MIN_CUT) for i, w in enumerate(widths)]
    room = console.width - 2 * len(widths)   # each column but the last: a space of padding, one between
    if sum(least) > room:   # no cut fits: a block of lines per row
        _records(headers, rows, console)
        return
    while sum(widths) > room:   # cut the widest column that may be cut, a character at a time
        i = max((i for i in range(len(widths)) if widths[i] > least[i]), key=lambda i: widths[i])
        widths[i] -= 1
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0))
    for i, header in enumerate(headers):
        table.add_column(Text(header), justify="right" if i in right else "left", no_wrap=True,
                         overflow="ellipsis", width=widths[i])
    for row in rows:
        table.add_row(*(Text(c) for c in row))   # Text: a value holding [brackets] is no markup
    console.print(table)


def _records(headers, rows, console) -> None:
    from rich.text import Text

    width = max(len(h) for h in headers)
    for n, row in enumerate(rows):
        if n:
            console.print()
        for header, value in zip(headers, row):
            console.print(Text(f"{header:<{width}}  {value}"), overflow="fold")


def emit(table, fmt: str, output: str | None) -> None:
    """An Arrow table in ``fmt`` ("table" for people, or a ``write_table`` format), to
    ``output`` or stdout."""
    if fmt != "table":
        write_table(table, fmt, output)
    elif output is None:
        print_arrow(table)
    else:
        with open(output, "w") as stream:
            print_arrow(table, stream)


def write_table(table, fmt: str, output: str | None) -> None:
    """Write an Arrow table as csv, json (JSON lines) or parquet, to ``output`` or stdout.

    JSON lines: one object per row, valid JSON (RFC 8259): timestamps as ISO 8601 text,
    durations in seconds, NaN and infinities as the strings "NaN", "Infinity" and
    "-Infinity" (JSON has no number for them). ``time_ns`` stays a number, past 2**53:
    a reader that takes numbers as doubles (JavaScript, jq) rounds it; ``time`` holds
    the same instant as text."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, output)
        return
    with _opened(output) as stream:
        if fmt == "csv":
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, stream)
        else:
            for batch in table.to_batches(max_chunksize=65536):
                rows = batch.to_pylist()
                odd = _nonfinite_columns(batch)
                if odd:
                    rows = [{k: json_safe(v) if k in odd else v for k, v in row.items()} for row in rows]
                stream.write(b"".join((json.dumps(row, default=json_value, allow_nan=False) + "\n").encode()
                                      for row in rows))
        stream.flush()


def _nonfinite_columns(batch) -> set[str]:
    """The names of ``batch``'s columns that hold a NaN or an infinity (floats, or lists
    or structs of them: json_safe walks those)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    odd = set()
    for field, column in zip(batch.schema, batch.columns):
        if pa.types.is_floating(field.type):
            if pc.any(pc.invert(pc.is_finite(column))).as_py():
                odd.add(field.name)
        elif pa.types.is_nested(field.type):
            odd.add(field.name)
    return odd


def json_safe(value):
    """``value`` with each NaN and infinity (also inside lists and dicts) as the JSON
    strings "NaN", "Infinity", "-Infinity"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


@contextlib.contextmanager
def _opened(output: str | None):
    if output is None:
        yield sys.stdout.buffer
    else:
        with open(output, "wb") as stream:
            yield stream


def json_value(value):
    """``json.dumps(default=json_value)``: times as ISO 8601, durations in seconds."""
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON")


@contextlib.contextmanager
def progress_bar(description: str, quiet: bool = False, counted: bool = True) -> Iterator[Progress | None]:
    """A bar on stderr, gone when the work ends; yields the ``progress(done, total)``
    callback to hand to the work, or None (no bar) when quiet or stderr is no terminal.
    ``counted`` False: a spinner with the time spent, for work that tells no progress."""
    if quiet or not is_terminal(sys.stderr):
        yield None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    columns = [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
    if counted:
        columns[2:2] = [BarColumn(), MofNCompleteColumn()]
        columns.append(TimeRemainingColumn())
    # stdout lines go above the bar when both are this terminal; redirected, they stay in their file
    with Progress(*columns, console=Console(stderr=True), transient=True,
                  redirect_stdout=is_terminal(sys.stdout), redirect_stderr=False) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update
