"""Ordered, crash-tolerant mapping over worker processes.

Reading structures runs native code (RDKit, spglib) that can kill its process outright (a
segfault, an abort). A plain process pool then hangs or loses the whole batch; here the inputs
after the last result received go to a fresh pool, and where that makes no progress the next
input runs alone in a process of its own, so only the input that crashes fails.

Workers die with their parent: a killed ``data build`` or ``predict`` (kill -9, a scheduler's
SIGTERM) would otherwise leave them blocked on a result pipe nobody reads, each holding its
memory, for ever.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this worker when its parent exits; elsewhere, exit now if the
    parent is already gone (nothing cheaper exists there)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _start_worker(parent: int, initializer: Callable[..., None] | None,
                  initargs: tuple[Any, ...]) -> None:
    _die_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


def map_in_processes(func: Callable[[Item], Result], items: Sequence[Item], workers: int, *,
                     crashed: Callable[[Item], Result],
                     initializer: Callable[..., None] | None = None,
                     initargs: tuple[Any, ...] = (), chunksize: int | None = None
                     ) -> Iterator[Result]:
    """``func`` of every item in up to ``workers`` forked processes, yielded in input order.

    ``func`` and ``initializer`` must be picklable module-level functions. An item whose
    processing kills its worker process yields ``crashed(item)`` instead; the others are
    processed as usual. ``chunksize`` (default: about eight chunks per worker, at most 32
    items each) trades scheduling overhead against how many items a crash makes re-run.
    """
    import concurrent.futures as cf
    import multiprocessing as mp

    ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
    start, stalled_at = 0, -1
    while start < len(items):
        rest, round_start = items[start:], start
        alone = start == stalled_at
        pool = cf.ProcessPoolExecutor(1 if alone else max(1, min(workers, len(rest))),
                                      mp_context=ctx, initializer=_start_worker,
                                      initargs=(os.getpid(), initializer, initargs))
        try:
            chunk = 1 if alone else (chunksize or max(1, min(32, len(rest) // (workers * 8))))
            for result in pool.map(func, rest[:1] if alone else rest, chunksize=chunk):
                start += 1
                yield result
        except cf.process.BrokenProcessPool:
            if alone:
                yield crashed(items[start])
                start += 1
            elif start == round_start:  # no result at all from this pool: isolate the next
                stalled_at = start
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
