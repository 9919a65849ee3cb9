"""CUDA-graph capture of blocks of solver iterations (solver option ``cuda_graph=True``).

On a GPU at the batch sizes of these models an iteration's time is the host's: the driver and
the method launch ~100 small kernels per iteration, each costing several µs of Python and
dispatch. Between two convergence checks the driver never synchronises with the host, so the
``check_every`` iterations of such a block are a fixed sequence of kernels: captured once as a
CUDA graph, each later block is one ``replay()``.

What a block reads and writes lives in attributes of a few objects (the driver's loop state, the
method, the stagnation watch). A graph reads its inputs from fixed addresses, so the capture
ends with *copy-back*: every attribute the block rebound to a new tensor is copied (inside the
graph) into the tensor it held before, and rebound to it. Replaying the graph then advances the
state in place, and the Python-side counters are advanced by the method's ``graph_advance``.
A graph is reused only while every tensor attribute is still the one it was captured with
(compaction of converged rows rebinds them: the next block is captured anew) and while the
method's ``graph_key`` (its position in its ring buffer) matches. Anything that cannot be
captured (a host sync inside ``f``, an op CUDA graphs do not support, autograd on another
stream) makes the capture fail: the state is restored from a snapshot, the solve goes on
without graphs, and ``SolverStats.messages`` says why.

Off CUDA the option is ignored. Tests can set :data:`EMULATE_ON_CPU`: blocks then go through the
same snapshot / copy-back / identity checks with "capture" and "replay" run eagerly, and each
replay checks that ``graph_advance`` predicts the counters the Python code actually produced.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

EMULATE_ON_CPU = False  # tests only: emulate capture and replay on the CPU (see module docstring)

Objects = list[Any]
_PLAIN = (int, float, bool, str, type(None))


class Uncapturable(RuntimeError):
    """A block changed its state in a way a graph cannot replay."""


def _tensor_attrs(obj: Any) -> dict[str, Tensor]:
    return {k: v for k, v in vars(obj).items() if isinstance(v, Tensor)}


def _plain_attrs(obj: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(obj).items() if isinstance(v, _PLAIN)}


def _storage(t: Tensor) -> int:
    return t.untyped_storage().data_ptr() if t.numel() else 0


def _break_aliases(objs: Objects) -> None:
    """Give every tensor attribute its own storage (copy-back into shared storage would let
    one attribute's final value overwrite another's)."""
    seen: set[int] = set()
    for obj in objs:
        for name, t in _tensor_attrs(obj).items():
            ptr = _storage(t)
            if ptr in seen:
                setattr(obj, name, t.clone())
            elif ptr:
                seen.add(ptr)


def _snapshot(objs: Objects) -> list[dict[str, Any]]:
    return [dict(vars(obj)) for obj in objs]


def _restore(objs: Objects, saved: list[dict[str, Any]]) -> None:
    for obj, attrs in zip(objs, saved, strict=True):
        vars(obj).clear()
        vars(obj).update(attrs)


def _copy_back(objs: Objects, saved: list[dict[str, Any]]) -> None:
    """Copy each tensor attribute the block rebound into the tensor it held before; rebind."""
    moves: list[tuple[Any, str, Tensor, Tensor]] = []
    for obj, before in zip(objs, saved, strict=True):
        now = vars(obj)
        for name, value in now.items():
            if isinstance(value, Tensor) and not isinstance(before.get(name), Tensor):
                raise Uncapturable(f"{type(obj).__name__}.{name} became a tensor in the block")
        for name, old in before.items():
            if not isinstance(old, Tensor):
                continue
            new = now.get(name)
            if new is old:
                continue
            if (not isinstance(new, Tensor) or new.shape != old.shape
                    or new.dtype != old.dtype or new.device != old.device):
                raise Uncapturable(f"{type(obj).__name__}.{name} changed shape or type")
            moves.append((obj, name, old, new))
    # a new value that lives in some old tensor's storage would be overwritten before it is read
    olds = {_storage(old) for _, _, old, _ in moves} - {0}
    values = [new.clone() if _storage(new) in olds else new for _, _, _, new in moves]
    for (obj, name, old, _), value in zip(moves, values, strict=True):
        old.copy_(value)
        setattr(obj, name, old)


class _Capture(threading.local):
    """Per thread and device: the side stream captures run on, and one memory pool that all
    graphs share, kept alive by a tiny anchor graph.

    One long-lived pool, because freed graphs' pools are only given back to the device outside
    a capture (torch 2.11): with a pool per graph, pools of finished solves pile up until a
    capture runs out of memory; and a pool shared by graphs that are all freed cannot be used
    again. Sharing is safe because graphs of one thread replay one at a time and keep no state
    in pool memory between replays (copy-back puts it in the solver's own tensors).
    """

    def __init__(self) -> None:
        self.devices: dict[int, tuple[Any, Any, Any]] = {}

    def resources(self, device: torch.device) -> tuple[Any, Any]:
        """(stream, pool) for ``device``, created on first use."""
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index not in self.devices:
            stream = torch.cuda.Stream(index)
            pool = torch.cuda.graph_pool_handle()
            anchor = trivial_capture(stream, pool, index)
            self.devices[index] = (stream, pool, anchor)
        stream, pool, _ = self.devices[index]
        return stream, pool

    def renew(self, index: int) -> tuple[Any, Any]:
        """A fresh pool for ``index`` after a failed capture, which may have left the old one
        marked as recording; its anchor capture also resets the CUDA random generator."""
        stream = self.devices[index][0]
        pool = torch.cuda.graph_pool_handle()
        self.devices[index] = (stream, pool, trivial_capture(stream, pool, index))
        return stream, pool


def trivial_capture(stream: Any, pool: Any, index: int) -> Any:
    """Capture one tiny kernel into ``pool`` and return the graph. Also what resets the CUDA
    random generator after a failed capture (which leaves it in capture mode)."""
    graph = torch.cuda.CUDAGraph()
    stream.wait_stream(torch.cuda.current_stream(index))
    with torch.cuda.device(index), torch.cuda.stream(stream):
        graph.capture_begin(pool=pool, capture_error_mode="thread_local")
        try:
            torch.zeros(1, device=f"cuda:{index}").add_(1)
        finally:
            end_capture(graph, pool, index)
    return graph


def end_capture(graph: Any, pool: Any, index: int) -> None:
    """``graph.capture_end()``, leaving the allocator sane when the capture failed.

    When the capture was invalidated (e.g. by a host sync), ``capture_end`` raises before it
    tells the caching allocator to stop routing this thread's allocations to ``pool`` (torch
    2.11): every later capture into the pool is refused ("already recording to mempool_id"),
    including the one that resets the CUDA random generator. So that step is done here where
    torch has the binding; the solver also moves on to a fresh pool (``_Capture.renew``).
    """
    try:
        graph.capture_end()
    except Exception:
        # the allocator may keep a filter that refers to this graph: keep it alive
        _FAILED_GRAPHS.append(graph)
        stop = getattr(torch._C, "_cuda_endAllocateToPool", None)
        if stop is not None:
            # raises if capture_end got far enough to do it itself, or on another torch
            with contextlib.suppress(Exception):
                stop(index, pool)
        raise


_FAILED_GRAPHS: list[Any] = []


_CAPTURE = _Capture()


@dataclass
class _Captured:
    graph: Any  # torch.cuda.CUDAGraph, or the block function when emulated
    inputs: list[dict[str, Tensor]]

    def matches(self, objs: Objects) -> bool:
        for obj, inputs in zip(objs, self.inputs, strict=True):
            now = _tensor_attrs(obj)
            if now.keys() != inputs.keys() or any(now[k] is not v for k, v in inputs.items()):
                return False
        return True


class BlockGraphs:
    """Captures and replays blocks of iterations of one solve; see the module docstring."""

    def __init__(self, device: torch.device, method: Any, emulate: bool = False) -> None:
        self.method = method
        self.emulate = emulate
        self.cache: dict[Hashable, _Captured] = {}
        self.failure: str | None = None
        self.shape_key: Hashable = None
        self.replays = 0
        self.captures = 0
        if not emulate:
            self.device_index = device.index if device.index is not None else \
                torch.cuda.current_device()
            self.stream, self.pool = _CAPTURE.resources(device)

    @classmethod
    def for_device(cls, device: torch.device, method: Any) -> BlockGraphs | None:
        """A block runner for ``device``, or None where graphs do not apply (the CPU)."""
        if not hasattr(method, "graph_key"):
            return None
        if device.type == "cuda":
            return cls(device, method)
        if EMULATE_ON_CPU:
            return cls(device, method, emulate=True)
        return None

    def run(
        self,
        shape_key: Hashable,
        length: int,
        objs: Objects,
        eager: Callable[[], None],
        block: Callable[[], None],
    ) -> None:
        """Run ``length`` iterations: replay a graph, capture one, or run ``eager``.

        ``shape_key`` names everything the graph bakes in besides the method's position (the
        compaction epoch, which fixes the row count, and the block length); ``block`` is the
        graph-safe version of ``eager``.
        """
        method_key = self.method.graph_key()
        if self.failure is not None or method_key is None:
            eager()
            return
        if shape_key != self.shape_key:  # new shapes (compaction): older graphs are dead
            self.cache.clear()
            self.shape_key = shape_key
        key = (shape_key, method_key)
        entry = self.cache.get(key)
        if entry is not None and entry.matches(objs):
            expected = self._replay(entry, objs)
            self.method.graph_advance(length)
            if expected is not None:
                advanced = [_plain_attrs(obj) for obj in objs]
                if advanced != expected:
                    raise Uncapturable(f"graph_advance left {advanced}, an eager run of the "
                                       f"block produced {expected}")
            self.replays += 1
            return
        _break_aliases(objs)
        saved = _snapshot(objs)
        try:
            graph = self._capture(objs, saved, block)
        except Exception as exc:  # any capture failure: go on without graphs
            _restore(objs, saved)
            self.failure = f"cuda_graph: capture failed ({type(exc).__name__}: {exc}); " \
                           "the solve went on without graphs"
            if not self.emulate:
                try:  # a capture that ends in an error leaves the CUDA generator capturing
                    self.stream, self.pool = _CAPTURE.renew(self.device_index)
                except Exception as again:
                    self.failure += f" (and the recovery capture failed too: {again})"
            eager()
            return
        self.cache[key] = _Captured(graph, [_tensor_attrs(obj) for obj in objs])
        self.captures += 1
        if not self.emulate:
            graph.replay()  # capturing recorded the block; this runs it

    def _capture(self, objs: Objects, saved: list[dict[str, Any]],
                 block: Callable[[], None]) -> Any:
        if self.emulate:
            block()
            _copy_back(objs, saved)
            return block
        graph = torch.cuda.CUDAGraph()
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            graph.capture_begin(pool=self.pool, capture_error_mode="thread_local")
            try:
                block()
                _copy_back(objs, saved)
            finally:
                end_capture(graph, self.pool, self.device_index)
        return graph

    def _replay(self, entry: _Captured, objs: Objects) -> list[dict[str, Any]] | None:
        """Replay; when emulated, run the block for real and return the counters it produced
        (the caller checks that ``graph_advance`` reproduces them, as a real replay needs)."""
        if not self.emulate:
            entry.graph.replay()
            return None
        saved = _snapshot(objs)
        entry.graph()
        _copy_back(objs, saved)
        produced = [_plain_attrs(obj) for obj in objs]
        for obj, before in zip(objs, saved, strict=True):
            vars(obj).update({k: v for k, v in before.items() if isinstance(v, _PLAIN)})
        return produced
