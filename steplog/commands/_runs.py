"""Stores and run ids on the command line.

Run ids are 32 hex digits; a command takes any unique prefix of one, as git takes a
commit's, or the name of a run when no other run has it (ids first: a name that is also
a prefix of an id names that run), and shows ids cut to the shortest length that tells
every run of the store apart (at least 8 digits).
"""

from __future__ import annotations

import bisect
import string

from ..engine.errors import InvalidArgumentError, NotFoundError

MIN_ABBREV = 8
ID_LENGTH = 32
HEX = frozenset(string.hexdigits)


def open_store(path: str, write: bool = False):
    """The store at ``path``; read only unless ``write`` (a read-only open of a missing
    path raises NotFoundError and creates nothing)."""
    import steplog

    return steplog.open(path, mode="a" if write else "r")


class RunIds:
    """The ids of a store's runs, sorted, to resolve prefixes and abbreviate."""

    def __init__(self, ids, names=None):
        self.ids = sorted(ids)
        self.names = dict(zip(ids, names)) if names is not None else {}
        self._by_name = None

    @classmethod
    def of(cls, store, runs=None) -> "RunIds":
        """From ``runs`` (a runs table of every run) or the store's."""
        runs = store.runs() if runs is None else runs
        return cls(runs.column("id").to_pylist(), runs.column("name").to_pylist())

    def resolve(self, prefix: str, argument: str = "run") -> str:
        """The one run ``prefix`` names: the id it starts (hex digits), else the run it
        is the name of. NotFoundError for none, InvalidArgumentError listing the
        candidates for several (ids that start with it, or runs of that name)."""
        text = prefix.strip().lower()
        if text and HEX.issuperset(text) and len(text) <= ID_LENGTH:
            lo = bisect.bisect_left(self.ids, text)
            hi = bisect.bisect_left(self.ids, text + "g")   # 'g' sorts after every hex digit
            if hi - lo == 1:
                return self.ids[lo]
            if hi - lo > 1:
                raise InvalidArgumentError(argument, f"{prefix} is ambiguous: {hi - lo} runs start with it: "
                                           + self._listed(self.ids[lo:hi]))
        named = self._named(prefix) or self._named(prefix.strip())
        if len(named) == 1:
            return named[0]
        if named:
            raise InvalidArgumentError(argument, f"{prefix} is ambiguous: {len(named)} runs have that name: "
                                       + self._listed(named) + "; give an id (or a prefix of one)")
        import difflib

        close = difflib.get_close_matches(prefix, sorted({n for n in self.names.values() if n}), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise NotFoundError(f"{argument}: no run {prefix} (no id starts with it, no run has that name){hint}")

    def _named(self, name: str) -> list[str]:
        if self._by_name is None:
            self._by_name = {}
            for run_id in self.ids:
                if self.names.get(run_id) is not None:
                    self._by_name.setdefault(self.names[run_id], []).append(run_id)
        return self._by_name.get(name, [])

    def _listed(self, ids: list[str], most: int = 10) -> str:
        shown = [f"{i} ({self.names[i]})" if self.names.get(i) else i for i in ids[:most]]
        return ", ".join(shown) + (f" and {len(ids) - len(shown)} more" if len(ids) > len(shown) else "")

    def abbrev_length(self, shown=None) -> int:
        """The length at which each id of ``shown`` (default: all) differs from every
        other id of the store, at least MIN_ABBREV."""
        need = MIN_ABBREV
        for run_id in (self.ids if shown is None else shown):
            i = bisect.bisect_left(self.ids, run_id)
            for j in (i - 1, i + 1):   # the closest ids are the neighbours in sorted order
                if 0 <= j < len(self.ids):
                    need = max(need, _common_prefix(run_id, self.ids[j]) + 1)
        return min(need, ID_LENGTH)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def resolve_runs(store, prefixes: list[str], argument: str = "run") -> list[str]:
    """Full ids for ``prefixes`` (id prefixes or run names). Full-length ids skip the
    scan of the runs table: the store checks them when it reads."""
    if all(len(p) == ID_LENGTH and HEX.issuperset(p.lower()) for p in prefixes):
        return [p.lower() for p in prefixes]
    ids = RunIds.of(store)
    return [ids.resolve(p, argument) for p in prefixes]
