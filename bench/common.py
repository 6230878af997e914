"""Shared helpers: progress lines, CPU pinning, file-descriptor limits, latency histograms,
process sampling (psutil) and Prometheus scraping. Stdlib + psutil only."""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_T0 = time.monotonic()


def progress(msg: str) -> None:
    """One line per step on stderr, with the elapsed time of the whole run."""
    tenths = int((time.monotonic() - _T0) * 10)
    minutes, rest = divmod(tenths, 600)
    print(f"[bench {minutes:02d}:{rest / 10:04.1f}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ CPU


def cpu_plan() -> tuple[set[int] | None, set[int] | None]:
    """(server CPUs, load CPUs): servers on CPU 0, everything else (load generator, producer,
    broker, Redis) on the other CPUs. None when the machine has a single usable CPU."""
    try:
        usable = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None, None
    if len(usable) < 2:
        return None, None
    return {usable[0]}, set(usable[1:])


def pin(pid: int, cpus: set[int] | None) -> None:
    """Pin every thread of `pid` (and of its children) to `cpus`. Threads created later inherit
    the mask of the thread that creates them, so pinning right after start covers them too."""
    if not cpus:
        return
    pids = [pid]
    with contextlib.suppress(Exception):
        import psutil

        pids += [c.pid for c in psutil.Process(pid).children(recursive=True)]
    for p in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{p}/task")]
        except OSError:
            tids = [p]
        for tid in tids:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cpus)


def pin_self(cpus: set[int] | None) -> None:
    if cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, cpus)


# ------------------------------------------------------------------------------------ fds


def raise_nofile(want: int = 200_000) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE (soft to hard; hard too when privileged). Children inherit it, so
    calling this before starting a worker gives the worker the same limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target_hard = max(hard, want) if hard != resource.RLIM_INFINITY else hard
    for new in ((target_hard, target_hard), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, new)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# ------------------------------------------------------------------------------------ latency

# Log-linear bins (milliseconds): 0.1 ms up to 100 ms, 1 ms up to 1 s, 10 ms up to 10 s.
HIST_BINS = 2801


def hist_index(ms: float) -> int:
    if ms < 100.0:
        return int(ms * 10.0) if ms > 0 else 0
    if ms < 1000.0:
        return 1000 + int(ms - 100.0)
    if ms < 10000.0:
        return 1900 + int((ms - 1000.0) * 0.1)
    return 2800


def bin_upper(i: int) -> float:
    if i < 1000:
        return (i + 1) / 10.0
    if i < 1900:
        return 100.0 + (i - 1000) + 1
    if i < 2800:
        return 1000.0 + (i - 1900 + 1) * 10.0
    return float("inf")


@dataclass
class Hist:
    """A merged latency histogram with percentile queries (bin upper edges)."""

    counts: list[int]
    total_ms: float = 0.0
    max_ms: float = 0.0

    @classmethod
    def empty(cls) -> Hist:
        return cls([0] * HIST_BINS)

    def merge(self, counts: list[int], total_ms: float = 0.0, max_ms: float = 0.0) -> None:
        c = self.counts
        for i, n in enumerate(counts):
            if n:
                c[i] += n
        self.total_ms += total_ms
        self.max_ms = max(self.max_ms, max_ms)

    @property
    def count(self) -> int:
        return sum(self.counts)

    def percentile(self, q: float) -> float | None:
        n = self.count
        if not n:
            return None
        rank = q / 100.0 * n
        seen = 0
        for i, k in enumerate(self.counts):
            seen += k
            if k and seen >= rank:
                return min(bin_upper(i), self.max_ms) if i == 2800 else bin_upper(i)
        return self.max_ms

    def summary(self) -> dict[str, float | int | None]:
        n = self.count
        return {
            "count": n,
            "p50_ms": self.percentile(50),
            "p95_ms": self.percentile(95),
            "p99_ms": self.percentile(99),
            "p999_ms": self.percentile(99.9),
            "mean_ms": round(self.total_ms / n, 2) if n else None,
            "max_ms": round(self.max_ms, 1) if n else None,
        }


# ------------------------------------------------------------------------------------ processes


class ProcWatch:
    """CPU seconds (user+sys, from the kernel) and RSS of a set of processes."""

    def __init__(self, pids: Iterable[int]) -> None:
        import psutil

        self.procs = [psutil.Process(p) for p in pids]

    def cpu(self) -> float:
        total = 0.0
        for p in self.procs:
            with contextlib.suppress(Exception):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def rss(self) -> int:
        total = 0
        for p in self.procs:
            with contextlib.suppress(Exception):
                total += p.memory_info().rss
        return total

    def alive(self) -> bool:
        return all(p.is_running() and p.status() != "zombie" for p in self.procs)


# ------------------------------------------------------------------------------------ HTTP


def http_json(url: str, timeout: float = 2.0) -> dict[str, Any]:
    import json

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except Exception:
        return {}


def scrape(url: str, timeout: float = 3.0) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text format -> [(name, labels, value)] (enough of the format for our use)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            text = resp.read().decode()
    except Exception:
        return []
    out = []
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels: dict[str, str] = {}
        for part in rest.rstrip("}").split('",'):
            k, _, v = part.partition("=")
            if k:
                labels[k.strip()] = v.strip('"')
        try:
            out.append((name, labels, float(value)))
        except ValueError:
            continue
    return out


def metric_sum(samples: list[tuple[str, dict[str, str], float]], name: str, **want: str) -> float:
    return sum(
        v
        for n, labels, v in samples
        if n == name and all(labels.get(k) == w for k, w in want.items())
    )


def stream_ok(base_url: str, topic: str = "gps-events") -> float:
    """The worker's `ws_stream_events_total{topic, outcome="ok"}`."""
    return metric_sum(
        scrape(f"{base_url}/metrics"), "ws_stream_events_total", topic=topic, outcome="ok"
    )


def median(values: list[float]) -> float | None:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def bucket_counts(
    samples: list[tuple[str, dict[str, str], float]], name: str
) -> dict[float, float]:
    """Cumulative Prometheus histogram buckets {upper bound (s): count}, summed over labels."""
    out: dict[float, float] = {}
    for n, labels, v in samples:
        if n == f"{name}_bucket":
            le = labels.get("le", "")
            bound = float("inf") if le == "+Inf" else float(le)
            out[bound] = out.get(bound, 0.0) + v
    return out


def bucket_percentile(
    before: dict[float, float], after: dict[float, float], q: float
) -> float | None:
    """Upper bound (ms) of the bucket holding the q-th percentile of the observations made
    between two scrapes."""
    bounds = sorted(after)
    delta = [after[b] - before.get(b, 0.0) for b in bounds]
    if not delta or delta[-1] <= 0:
        return None
    rank = q / 100.0 * delta[-1]
    for b, c in zip(bounds, delta, strict=True):
        if c >= rank:
            return b * 1000.0
    return None


class CoreBusy:
    """Busy share of a set of CPUs between two points in time (all processes, not just ours:
    other work on the machine shows up here)."""

    def __init__(self, cpus: set[int] | None) -> None:
        import psutil

        self._psutil = psutil
        self.cpus = sorted(cpus) if cpus else None
        self.t0 = self._sample()

    def _sample(self) -> tuple[float, float]:
        per = self._psutil.cpu_times(percpu=True)
        chosen = [per[i] for i in self.cpus] if self.cpus else per
        total = sum(sum(t) for t in chosen)
        idle = sum(t.idle + getattr(t, "iowait", 0.0) for t in chosen)
        return total, idle

    def busy(self) -> float:
        total, idle = self._sample()
        dt = total - self.t0[0]
        return round(1.0 - (idle - self.t0[1]) / dt, 3) if dt > 0 else 0.0
