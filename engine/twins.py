"""Whether a process still does its numba work in numpy, the kernels' twins.

Importing numba and loading cached kernels costs a fresh process 0.5 s and more, so a
short script never should. The numpy twins (engine.smallcodec, engine.smallrollup)
give the same results, a little slower: a few tens of nanoseconds more a word, and
tens of microseconds a call. So work goes to numpy until numba is imported anyway
(tensor summaries, reads), or until a process has done BUDGET words of numpy work,
about 0.3 s more than the kernels would have taken; from then on paying for the import
once is the cheaper way, and the kernels take over.
"""

from __future__ import annotations

import sys

BUDGET = 10_000_000   # words of numpy work (about 30 ns each more than the kernels)
_spent = [0]


def use_numpy(words: int) -> bool:
    """Whether work costing ``words`` (the caller's estimate, in words of about 30 ns
    of extra numpy time) is done in numpy; if so it is counted against the budget.
    Threads may race on the count: it is a budget, not a total."""
    if "numba" in sys.modules or _spent[0] >= BUDGET:
        return False
    _spent[0] += words
    return True
