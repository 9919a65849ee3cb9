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
from functools import partial
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
CRASHED = "reading it crashed the process (native code in RDKit or spglib)"
"""The reason callers give an input whose reading killed its worker process."""
_INIT_ERROR: Exception | None = None  # in a worker: what its initializer raised


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
    global _INIT_ERROR
    _die_with_parent(parent)
    if initializer is not None:
        try:
            initializer(*initargs)
        except Exception as exc:  # raised by _call: one error, not a "crash" of every input
            _INIT_ERROR = exc


def _call(func: Callable[[Item], Result], item: Item) -> Result:
    if _INIT_ERROR is not None:
        raise _INIT_ERROR
    return func(item)


def map_in_processes(func: Callable[[Item], Result], items: Sequence[Item], workers: int, *,
                     crashed: Callable[[Item], Result],
                     initializer: Callable[..., None] | None = None,
                     initargs: tuple[Any, ...] = (), chunksize: int | None = None
                     ) -> Iterator[Result]:
    """``func`` of every item in up to ``workers`` forked processes, yielded in input order.

    ``func`` and ``initializer`` must be picklable module-level functions. An item whose
    processing kills its worker process yields ``crashed(item)`` instead; the others are
    processed as usual. An exception raised by ``initializer`` (or ``func``) is raised here.
    ``chunksize`` (default: about eight chunks per worker, at most 32 items each) trades
    scheduling overhead against how many items a crash makes re-run.
    """
    import concurrent.futures as cf
    import multiprocessing as mp

    ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
    call = partial(_call, func)
    # after a pool broke with no result, the items it had in flight (``window``) run one at a
    # time in one process: the first that breaks that pool is the culprit
    start, window, alone = 0, 0, False
    while start < len(items):
        rest, round_start = items[start:], start
        chunk = 1 if alone else (chunksize or max(1, min(32, len(rest) // (workers * 8))))
        pool = cf.ProcessPoolExecutor(1 if alone else max(1, min(workers, len(rest))),
                                      mp_context=ctx, initializer=_start_worker,
                                      initargs=(os.getpid(), initializer, initargs))
        try:
            for result in pool.map(call, rest[:window] if alone else rest, chunksize=chunk):
                start += 1
                yield result
            alone = False
        except cf.process.BrokenProcessPool:
            if alone:
                yield crashed(items[start])
                start += 1
                alone = False
            elif start == round_start:
                alone, window = True, max(1, workers) * chunk
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
