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
MAX_WORK = BUDGET // 10   # one piece of work bigger than this (a flush of 300,000 points) goes to the kernels
_spent = [0]
_kernels_only = [False]   # set by use_kernels


def use_numpy(words: int) -> bool:
    """Whether work costing ``words`` (the caller's estimate, in words of about 30 ns
    of extra numpy time) is done in numpy: while numba is not imported and the work
    fits in what is left of the budget; a big piece of work is a process that will
    need the kernels anyway, so it takes them at once. Threads may race on the count:
    it is a budget, not a total."""
    if _kernels_only[0] or "numba" in sys.modules or words > MAX_WORK or _spent[0] + words > BUDGET:
        return False
    _spent[0] += words
    return True


def use_kernels() -> None:
    """From now on this process uses the numba kernels (imported and loaded on first
    use): for a warm-up that should leave them loaded, as a benchmark's before its clock
    starts, or a long-running writer that knows it will need them."""
    _kernels_only[0] = True
