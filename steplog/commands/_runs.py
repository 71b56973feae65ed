"""Stores and run ids on the command line.

Run ids are 32 hex digits; a command takes any unique prefix of one, as git takes a
commit's, and shows them cut to the shortest length that tells every run of the store
apart (at least 8 digits).
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

    @classmethod
    def of(cls, store, runs=None) -> "RunIds":
        """From ``runs`` (a runs table of every run) or the store's."""
        runs = store.runs() if runs is None else runs
        return cls(runs.column("id").to_pylist(), runs.column("name").to_pylist())

    def resolve(self, prefix: str, argument: str = "run") -> str:
        """The one id starting with ``prefix``: NotFoundError for none, InvalidArgumentError
        listing the candidates for several."""
        text = prefix.strip().lower()
        if not text or not HEX.issuperset(text) or len(text) > ID_LENGTH:
            raise InvalidArgumentError(argument, f"{prefix!r} is not a run id (up to {ID_LENGTH} hex digits)")
        lo = bisect.bisect_left(self.ids, text)
        hi = bisect.bisect_left(self.ids, text + "g")   # 'g' sorts after every hex digit
        if lo == hi:
            raise NotFoundError(f"{argument}: no run {prefix}")
        if hi - lo > 1:
            shown = [f"{i} ({self.names[i]})" if self.names.get(i) else i for i in self.ids[lo:min(hi, lo + 10)]]
            more = f" and {hi - lo - len(shown)} more" if hi - lo > len(shown) else ""
            raise InvalidArgumentError(argument, f"{prefix} is ambiguous: {hi - lo} runs start with it: "
                                       + ", ".join(shown) + more)
        return self.ids[lo]

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
    """Full ids for ``prefixes``. Full-length ids skip the scan of the runs table: the
    store checks them when it reads."""
    if all(len(p) == ID_LENGTH and HEX.issuperset(p.lower()) for p in prefixes):
        return [p.lower() for p in prefixes]
    ids = RunIds.of(store)
    return [ids.resolve(p, argument) for p in prefixes]
