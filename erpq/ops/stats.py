"""Ops section: throughput and latency per task over time, from the run history.

``throughput(bucket_s, buckets)`` gives, per task (and for all tasks together,
``task_name == "*"``), over the last ``buckets`` buckets of ``bucket_s``
seconds (aligned to the clock): runs processed and failed per bucket, wait in
queue (enqueued -> started) and run time p50/p95 per bucket, and the same over
the whole window. ``erpq stats`` and the console's Stats section read it.

The database aggregates: one scan of the window (by the ``finished_at``
index) and one ``GROUP BY`` return counts per task, time bucket and latency
bucket (a fixed ladder of 10 buckets per decade, 1 ms to 100,000 s, for run
time and for wait). A percentile is placed within its latency bucket (at most
about 12% from the exact value) and kept within the smallest and largest value
seen. No run row reaches Python. A bucket that ended ``GRACE_S`` ago no longer
changes (its runs are written), so an ``Ops`` keeps what it read of it: after
the first call, a call reads only the newest buckets (the console polls every
``console.poll_s``). A run written later into a kept bucket shows in a new
``Ops`` (a restarted console, the next ``erpq stats``).
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..db import seconds_between
from ..models import JobRun
from .base import Invalid, OpsCore, _Record

#: Latency bucket bounds (seconds): 10 per decade, 1 ms to 100,000 s.
LADDER: tuple[float, ...] = tuple(float(f"{10 ** (k / 10):.4g}") for k in range(-30, 51))
#: Run statuses counted as processed, and which of them as failed.
DONE = ("success", "failed", "retrying", "abandoned")
FAILED = ("failed", "retrying", "abandoned")
#: A bucket this long past its end is final (the run history is written within seconds).
GRACE_S = 120
#: The console's windows: name -> (bucket seconds, buckets).
WINDOWS: dict[str, tuple[int, int]] = {"hour": (60, 60), "day": (3600, 24)}
#: The task name of the all-tasks row.
ALL = "*"


@dataclass
class TaskThroughput(_Record):
    """One task's throughput and latency over a window, and per bucket (oldest first)."""

    task_name: str
    processed: int
    failed: int
    per_min: float
    failed_per_min: float
    wait_p50_s: float | None
    wait_p95_s: float | None
    run_p50_s: float | None
    run_p95_s: float | None
    start: dt.datetime  # start of the first bucket
    bucket_s: int
    processed_series: list[int] = field(default_factory=list)
    failed_series: list[int] = field(default_factory=list)
    wait_p50_series: list[float | None] = field(default_factory=list)
    wait_p95_series: list[float | None] = field(default_factory=list)
    run_p50_series: list[float | None] = field(default_factory=list)
    run_p95_series: list[float | None] = field(default_factory=list)


class _Hist:
    """Counts per ladder bucket, with the smallest and largest value seen."""

    __slots__ = ("counts", "lo", "hi")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.lo = math.inf
        self.hi = -math.inf

    def add(self, index: int, n: int, lo: float | None, hi: float | None) -> None:
        self.counts[index] = self.counts.get(index, 0) + n
        if lo is not None:
            self.lo = min(self.lo, lo)
        if hi is not None:
            self.hi = max(self.hi, hi)

    def merge(self, other: _Hist) -> None:
        for i, n in other.counts.items():
            self.counts[i] = self.counts.get(i, 0) + n
        self.lo, self.hi = min(self.lo, other.lo), max(self.hi, other.hi)

    def quantile(self, q: float) -> float | None:
        return ladder_quantile(self.counts, q, self.lo, self.hi)


def ladder_quantile(counts: dict[int, int], q: float, lo: float = -math.inf, hi: float = math.inf) -> float | None:
    """The ``q`` quantile of values counted per ``LADDER`` bucket (index i: below
    ``LADDER[i]`` and at least ``LADDER[i-1]``): the nearest-rank value, placed in
    its bucket as if the bucket's values were evenly spread (so within half a
    bucket, about 12%, of the exact one) and kept within ``[lo, hi]``, the
    smallest and largest value seen."""
    total = sum(counts.values())
    if not total:
        return None
    rank = max(1, math.ceil(q * total - 1e-9))  # nearest rank, 1-based
    seen = 0
    for i in sorted(counts):
        n = counts[i]
        if seen + n >= rank:
            # The n values of the bucket taken as evenly spread across it.
            low = LADDER[i - 1] if i > 0 else 0.0
            high = LADDER[i] if i < len(LADDER) else LADDER[-1]
            value = low + (high - low) * (rank - seen - 0.5) / n
            return round(min(max(value, lo), hi), 4)
        seen += n
    return round(min(max(LADDER[-1], lo), hi), 4)


def _index(expr: Any, bounds: list[Any], literal: bool) -> Any:
    """The bucket index of ``expr`` among ascending ``bounds`` (0: below the first,
    len(bounds): at or above the last), as a balanced tree of CASEs: plain
    comparisons every database runs, log2(len) of them per row."""
    def bound(b: Any) -> Any:
        return sa.literal_column(repr(b)) if literal else b

    def build(lo: int, hi: int) -> Any:
        if lo == hi:
            return sa.literal_column(str(lo))
        mid = (lo + hi + 1) // 2
        return sa.case((expr < bound(bounds[mid - 1]), build(lo, mid - 1)), else_=build(mid, hi))

    return build(0, len(bounds))


def _ladder(value: Any) -> Any:
    """The ``LADDER`` bucket of ``value``; NULL for NULL."""
    return sa.case((value.is_(None), sa.null()), else_=_index(value, list(LADDER), literal=True))


class _Agg:
    """One task in one time bucket."""

    __slots__ = ("done", "failed", "wait", "run")

    def __init__(self) -> None:
        self.done = 0
        self.failed = 0
        self.wait = _Hist()
        self.run = _Hist()


def read_buckets(session: Any, start: dt.datetime, bucket_s: int, n: int) -> dict[int, dict[str, _Agg]]:
    """Per bucket ``k`` (0..n-1, from ``start``) and task: counts and latency
    histograms of the runs that finished in it (later runs count in the last)."""
    bounds = [start + dt.timedelta(seconds=bucket_s * k) for k in range(1, n)]
    tb = _index(JobRun.finished_at, bounds, literal=False).label("tb")
    wait = seconds_between(JobRun.enqueued_at, JobRun.started_at)
    # COALESCE: grouping by the bare column made SQLite walk the (task_name, id) index
    # over the whole table instead of the time range.
    inner = (sa.select(sa.func.coalesce(JobRun.task_name, "").label("task"), tb,
                       sa.case((JobRun.status.in_(FAILED), 1), else_=0).label("bad"),
                       JobRun.duration_s.label("run"), wait.label("wait"))
             # The status test is a CASE so that no database picks the status index
             # over the time range (SQLite did, and scanned every successful run).
             .where(JobRun.finished_at >= start,
                    sa.case((JobRun.status.in_(DONE), 1), else_=0) == 1)).subquery()
    run = inner.c.run
    wait = sa.case((inner.c.wait < 0, 0.0), else_=inner.c.wait)  # a clock step: no wait at all
    # One scan, one GROUP BY: per task, time bucket and the two latency buckets.
    grouped = (sa.select(inner.c.task, inner.c.tb, inner.c.bad,
                         _ladder(run).label("rb"), run.label("rv"),
                         _ladder(wait).label("wb"), wait.label("wv"))).subquery()
    g = grouped.c
    q = (sa.select(g.task, g.tb, g.rb, g.wb, sa.func.count(), sa.func.sum(g.bad), sa.func.min(g.rv), sa.func.max(g.rv),
                   sa.func.min(g.wv), sa.func.max(g.wv))
         .group_by(g.task, g.tb, g.rb, g.wb))
    out: dict[int, dict[str, _Agg]] = {}
    for task, k, rb, wb, n, bad, rlo, rhi, wlo, whi in session.execute(q):
        a = out.setdefault(int(k), {}).setdefault(task, _Agg())
        a.done += int(n)
        a.failed += int(bad or 0)
        if rlo is not None:  # a NULL run time (or wait) groups on its own: nothing to count
            a.run.add(int(rb), int(n), float(rlo), float(rhi))
        if wlo is not None:
            a.wait.add(int(wb), int(n), float(wlo), float(whi))
    return out


class StatsOps(OpsCore):
    """Throughput and latency per task (``erpq stats``, the console's Stats section)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stats_lock = threading.Lock()
        #: bucket_s -> absolute bucket number -> task -> aggregate, for final buckets only.
        self._stats_final: dict[int, dict[int, dict[str, _Agg]]] = {}

    def throughput(self, bucket_s: int = 60, buckets: int = 60) -> list[TaskThroughput]:
        """Per task (and ``"*"`` for all tasks, first), over the last ``buckets`` buckets
        of ``bucket_s`` seconds: processed, failed, wait and run p50/p95, in total and per bucket."""
        if not isinstance(bucket_s, int) or not 1 <= bucket_s <= 86_400:
            raise Invalid(f"bucket_s must be 1 to 86400 seconds (got {bucket_s!r})")
        if not isinstance(buckets, int) or not 1 <= buckets <= 1_000:
            raise Invalid(f"buckets must be 1 to 1000 (got {buckets!r})")
        now = dt.datetime.now(dt.UTC)
        last = int(now.timestamp()) // bucket_s
        first = last - buckets + 1
        final_upto = (int(now.timestamp()) - GRACE_S) // bucket_s - 1  # buckets that no longer change
        with self._stats_lock:
            cache = self._stats_final.setdefault(bucket_s, {})
            for b in [b for b in cache if b < first]:
                del cache[b]
            need = next((b for b in range(first, last + 1) if b > final_upto or b not in cache), last + 1)
        fresh: dict[int, dict[str, _Agg]] = {}
        if need <= last:
            start = dt.datetime.fromtimestamp(need * bucket_s, dt.UTC)
            with self.rt.read_session() as s:
                read = read_buckets(s, start, bucket_s, last - need + 1)
            fresh = {need + k: v for k, v in read.items()}
            with self._stats_lock:
                for b in range(need, min(final_upto, last) + 1):
                    cache[b] = fresh.get(b, {})
        with self._stats_lock:
            per_bucket = {b: cache.get(b, {}) for b in range(first, need)}
        per_bucket.update({b: fresh.get(b, {}) for b in range(need, last + 1)})
        return _series(per_bucket, first, buckets, bucket_s)


def _series(per_bucket: dict[int, dict[str, _Agg]], first: int, buckets: int, bucket_s: int) -> list[TaskThroughput]:
    tasks = sorted({t for aggs in per_bucket.values() for t in aggs})
    minutes = buckets * bucket_s / 60
    start = dt.datetime.fromtimestamp(first * bucket_s, dt.UTC)
    out = []
    for task in [ALL, *tasks]:
        total = _Agg()
        row = TaskThroughput(task, 0, 0, 0.0, 0.0, None, None, None, None, start, bucket_s)
        for b in range(first, first + buckets):
            aggs = per_bucket.get(b, {})
            if task == ALL:
                a = _Agg()
                for x in aggs.values():
                    a.done += x.done
                    a.failed += x.failed
                    a.wait.merge(x.wait)
                    a.run.merge(x.run)
            else:
                a = aggs.get(task) or _Agg()
            total.done += a.done
            total.failed += a.failed
            total.wait.merge(a.wait)
            total.run.merge(a.run)
            row.processed_series.append(a.done)
            row.failed_series.append(a.failed)
            row.wait_p50_series.append(a.wait.quantile(.5))
            row.wait_p95_series.append(a.wait.quantile(.95))
            row.run_p50_series.append(a.run.quantile(.5))
            row.run_p95_series.append(a.run.quantile(.95))
        row.processed, row.failed = total.done, total.failed
        row.per_min, row.failed_per_min = round(total.done / minutes, 3), round(total.failed / minutes, 3)
        row.wait_p50_s, row.wait_p95_s = total.wait.quantile(.5), total.wait.quantile(.95)
        row.run_p50_s, row.run_p95_s = total.run.quantile(.5), total.run.quantile(.95)
        out.append(row)
    return out if tasks else []
