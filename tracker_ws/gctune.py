"""CPython's cyclic garbage collector, set for a worker with a large long-lived heap.

Every fix allocates a few dozen containers (Messages, dicts, lists) that die with their batch
or with the vehicle's next fix. With CPython's default young-generation threshold (700
allocations) a collection runs every few fixes and, as the per-vehicle state outlives it,
objects keep being promoted until a full collection walks the whole heap: the registry, the
tables, Faust's and aiohttp's objects. Two standard levers, both applied to the worker
process only (worker_init / ready):

- `freeze()` once start-up is done: what exists then (code, modules, the registry loaded so
  far) moves to the permanent generation and is never walked again;
- a larger young-generation threshold (TRACKER_WS_GC_GEN0; 0 keeps Python's), so that short-
  lived objects die by reference counting before any collection sees them. The default,
  50,000, was measured with `bench` S5 (one worker, full ingest): 20,000 → 50,000 gave about
  5 % more events per CPU-s, larger thresholds nothing more; a young collection of 50,000
  surviving dicts takes about 1 ms on the bench machine.

Cycles are still collected; only how often is changed.
"""

from __future__ import annotations

import gc


def set_gen0(threshold: int) -> None:
    if threshold > 0:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(threshold, gen1, gen2)


def freeze() -> None:
    gc.collect()
    gc.freeze()
