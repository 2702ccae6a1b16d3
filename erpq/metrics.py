"""Throughput, latency and the Prometheus export.

- ``stats(ops, minutes)``: per task, over the last ``minutes`` of run history:
  jobs/min processed and failed, wait in queue (enqueued → started) and run
  time, p50 and p95 (``ops.throughput``, aggregated in SQL; the console's
  Stats section reads the same). ``erpq stats [--json]`` prints it.
- ``prometheus_text(ops)``: the Prometheus text format (0.0.4): queue depth per
  state, runs per task and status (counters), run-time histograms per task,
  runner heartbeat age and liveness, alerts per severity, and what each Ops
  section adds through an optional ``metrics()`` method (health readings,
  webhook deliveries by status). ``erpq metrics`` prints it (node_exporter's
  textfile collector), ``serve(rt, port)`` answers ``/metrics`` and ``/healthz``.

Everything is read through Ops and the run history, so the numbers are the
ones the console and the CLI show.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import sqlalchemy as sa

from .ops.base import _Record
from .ops.stats import ALL

#: Run-time histogram buckets (seconds).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass
class TaskStats(_Record):
    task_name: str
    processed: int
    failed: int
    per_min: float
    failed_per_min: float
    wait_p50_s: float | None
    wait_p95_s: float | None
    run_p50_s: float | None
    run_p95_s: float | None
    #: Processed per bucket of the window, oldest first (for a sparkline).
    spark: list[int]


def stats(ops: Any, minutes: float = 60, buckets: int = 12) -> list[TaskStats]:
    """Per-task throughput and latency over the last ``minutes`` (finished runs), in
    ``buckets`` buckets: ``ops.throughput`` (aggregated by the database)."""
    if not 0 < minutes <= buckets * 86_400 / 60 or minutes != minutes:
        from .ops import Invalid

        raise Invalid(f"minutes must be more than 0 and at most {buckets * 1440:,} (got {minutes:g})")
    bucket_s = max(1, round(minutes * 60 / buckets))
    return [TaskStats(t.task_name, t.processed, t.failed, t.per_min, t.failed_per_min, t.wait_p50_s, t.wait_p95_s,
                      t.run_p50_s, t.run_p95_s, t.processed_series)
            for t in ops.throughput(bucket_s, buckets) if t.task_name != ALL]


# ====================================================================== Prometheus text


def _esc(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, Any]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items()) + "}"


class Exposition:
    """Collects metric families and writes them once each, HELP and TYPE first."""

    def __init__(self) -> None:
        self.families: dict[str, tuple[str, str, list[str]]] = {}

    def add(self, name: str, kind: str, help_text: str, samples: list[tuple[dict[str, Any], float]],
            suffix: str = "") -> None:
        fam = self.families.setdefault(name, (kind, help_text, []))
        for labels, value in samples:
            fam[2].append(f"{name}{suffix}{_labels(labels)} {_num(value)}")

    def text(self) -> str:
        lines = []
        for name, (kind, help_text, samples) in self.families.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
        return "\n".join(lines) + "\n"


def _num(v: float) -> str:
    if v == float("inf"):
        return "+Inf"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int) or float(v).is_integer():
        return str(int(v))
    return repr(float(v))


def prometheus_text(ops: Any, now: dt.datetime | None = None) -> str:
    from .alerts import collect, runner_dead_reason
    from .models import JobRun

    now = now or dt.datetime.now(dt.UTC)
    ex = Exposition()
    counts = ops.queue_counts()
    ex.add("erpq_queue_jobs", "gauge", "Jobs in the queue per state.",
           [({"state": k}, v) for k, v in sorted(counts.items())])
    with ops.rt.read_session() as s:
        per_status = s.execute(sa.select(JobRun.task_name, JobRun.status, sa.func.count())
                               .group_by(JobRun.task_name, JobRun.status)).all()
        cases = [sa.func.sum(sa.case((JobRun.duration_s <= b, 1), else_=0)) for b in BUCKETS]
        hist = s.execute(sa.select(JobRun.task_name, sa.func.count(), sa.func.sum(JobRun.duration_s), *cases)
                         .where(JobRun.duration_s.is_not(None)).group_by(JobRun.task_name)).all()
    processed = [({"task": t, "status": st}, n) for t, st, n in per_status if st not in ("enqueued", "running")]
    ex.add("erpq_runs_total", "counter", "Runs finished per task and status (from run history).", processed)
    for row in hist:
        task, n, total = row[0], row[1], row[2] or 0.0
        samples = [({"task": task, "le": repr(b)}, int(c or 0)) for b, c in zip(BUCKETS, row[3:], strict=True)]
        samples.append(({"task": task, "le": "+Inf"}, n))
        ex.add("erpq_run_duration_seconds", "histogram", "Run time of finished runs per task.", samples,
               suffix="_bucket")
        ex.families["erpq_run_duration_seconds"][2].append(
            f"erpq_run_duration_seconds_sum{_labels({'task': task})} {_num(total)}")
        ex.families["erpq_run_duration_seconds"][2].append(
            f"erpq_run_duration_seconds_count{_labels({'task': task})} {n}")
    dead_after = ops.rt.settings.runner.dead_after_s
    runners = ops.runners()
    ex.add("erpq_runner_heartbeat_age_seconds", "gauge", "Seconds since each running runner's heartbeat.",
           [({"runner": r.id, "host": r.host, "kind": r.kind}, round((now - r.heartbeat_at).total_seconds(), 3))
            for r in runners])
    ex.add("erpq_runner_alive", "gauge", "1 when the runner is alive (PID on this host, heartbeat elsewhere).",
           [({"runner": r.id, "host": r.host, "kind": r.kind},
             1 if runner_dead_reason(r, now, dead_after) is None else 0) for r in runners])
    alerts = collect(ops, now, counts)
    ex.add("erpq_alerts", "gauge", "Alerts raised now, per severity.",
           [({"severity": sev}, sum(1 for a in alerts if a.severity == sev)) for sev in ("critical", "warning")])
    for name in ops.section_names():
        method = getattr(ops.section(name), "metrics", None)
        if method is None:
            continue
        try:
            for fam_name, kind, help_text, samples in method():
                ex.add(f"erpq_{fam_name}", kind, help_text, samples)
        except Exception:  # a section's failure must not hide the rest
            ex.add("erpq_section_metrics_errors", "gauge", "1 when a section's metrics could not be read.",
                   [({"section": name}, 1)])
    return ex.text()


# ====================================================================== HTTP endpoint


def healthz(ops: Any, runner_id: str | None = None) -> tuple[bool, dict[str, Any]]:
    """Runner alive (this one, when given; else any) and store reachable."""
    from .alerts import runner_dead_reason

    report: dict[str, Any] = {}
    try:
        report["queue"] = ops.queue_counts()
        report["store"] = "ok"
    except Exception as exc:
        report["store"] = f"unreachable: {type(exc).__name__}"
        return False, report
    now = dt.datetime.now(dt.UTC)
    try:
        runners = ops.runners()
    except Exception as exc:
        report["database"] = f"unreachable: {type(exc).__name__}"
        return False, report
    dead_after = ops.rt.settings.runner.dead_after_s
    alive = [r for r in runners if runner_dead_reason(r, now, dead_after) is None
             and (runner_id is None or r.id == runner_id)]
    report["runner"] = "alive" if alive else "not alive"
    return bool(alive), report


def serve(ops: Any, port: int, host: str = "127.0.0.1", runner_id: str | None = None) -> ThreadingHTTPServer:
    """Answer ``/metrics`` and ``/healthz`` on ``host:port`` in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?")[0]
            try:
                if path == "/metrics":
                    body, code, ctype = prometheus_text(ops).encode(), 200, "text/plain; version=0.0.4"
                elif path == "/healthz":
                    ok, report = healthz(ops, runner_id)
                    body, code, ctype = json.dumps(report).encode(), 200 if ok else 503, "application/json"
                else:
                    body, code, ctype = b"not found: try /metrics or /healthz\n", 404, "text/plain"
            except Exception as exc:
                body, code, ctype = f"error: {type(exc).__name__}\n".encode(), 500, "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:  # scrapes every 15 s: not log material
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="erpq-metrics", daemon=True).start()
    return server


def spark(values: list[int]) -> str:
    """A sparkline of counts: ▁▂▃▄▅▆▇█."""
    if not values:
        return ""
    top = max(values) or 1
    bars = "▁▂▃▄▅▆▇█"
    return "".join(bars[min(int(v / top * (len(bars) - 1) + 0.5), len(bars) - 1)] if v else " " for v in values)
