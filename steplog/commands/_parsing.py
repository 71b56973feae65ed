"""Pieces every command's parser shares: the sub-parser with its example, and the
argument types."""

from __future__ import annotations

import argparse
import json


def add_command(sub, name: str, help: str, examples: str, description: str | None = None):
    """A sub-parser whose --help ends with ``examples`` (lines of shell, kept as written)."""
    return sub.add_parser(name, help=help, description=description or help,
                          epilog="example" + ("s" if examples.count("\n") else "") + ":\n"
                                 + "\n".join("  " + line for line in examples.splitlines()),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


def non_negative(text: str) -> int:
    value = whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def context_item(text: str) -> tuple[str, object]:
    """``key=value``: the value is read as JSON when it is a JSON number, true, false or
    null (``rank=3`` is the int 3), else taken as text (``subset=val``); ``k='"3"'`` is the
    text "3"."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"must be key=value, got {text!r}")
    try:
        parsed = json.loads(value)
    except ValueError:
        return key, value
    return key, parsed if parsed is None or isinstance(parsed, (int, float, str, bool)) else value


def context_dict(items: list[tuple[str, object]] | None) -> dict | None:
    return dict(items) if items else None


JSON_NOTE = ('json: JSON lines, NaN and infinities as the strings "NaN", "Infinity", "-Infinity"; time_ns is '
             'a number past 2**53, which some readers (JavaScript, jq) round: "time" holds it as ISO 8601 UTC')


def add_quiet(parser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
