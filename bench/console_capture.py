"""Picture of erpq-console over a real store: writes docs/console.svg.

Everything on the screen comes from the real runtime, in a fresh SQLite queue
and database in a temporary directory:

- tenants added through ``erpq.ops.Ops``;
- webhook subscriptions (to a receiver on 127.0.0.1 that answers 200, and to a
  closed port on 127.0.0.1 that refuses, so retries get scheduled), and events
  emitted through Ops, so ``DeliverWebhookJob`` jobs are queued and delivered;
- two jobs dispatched for a record that does not exist (as an operator's
  ``erpq queue dispatch`` with a wrong id would), which fail for real into failed_jobs;
- every periodic task the runtime registered (read from ``Ops.schedule()``,
  no names written here) triggered once, as ``erpq schedule run`` does;
- all of it run by the console's own embedded runner (``EmbeddedRunner``)
  through the real queue.

Then the console app (``tui.app.ErpqConsole``) is started headless at 100x30
with Textual's ``run_test`` and its screen is saved as SVG.

    python bench/console_capture.py                       # docs/console.svg, Schedule view
    python bench/console_capture.py --view failed -o /tmp/failed.svg
    python bench/console_capture.py --smoke               # to a temporary file: proves it runs
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZE = (100, 30)


class _Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"console_capture: {what} did not happen within {timeout:g} s")
        time.sleep(0.1)


def seed(ops, receiver_port: int) -> int:
    """Tenants, subscriptions, events, failures and periodic runs, all through Ops."""
    ops.add_tenant("acme", "Acme Ltd")
    ops.add_tenant("globex", "Globex Corporation")
    if "webhooks" in ops.section_names():
        ops.webhooks.add("acme", f"http://127.0.0.1:{receiver_port}/hooks/erp", ["deal.created"],
                         description="ERP sync")
        ops.webhooks.add("globex", f"http://127.0.0.1:{closed_port()}/hooks", ["deal.created"],
                         description="Globex intake (down)")
        for i in range(1, 7):
            ops.emit_event("deal.created", {"id": 100 + i, "name": f"Deal {100 + i}"}, "acme")
        for i in range(1, 3):
            ops.emit_event("deal.created", {"id": 200 + i, "name": f"Deal {200 + i}"}, "globex")
    # Real failed jobs: a job asked about a record that does not exist, through the
    # real queue. The first no-retry job taking one id that the store knows.
    import inspect

    from erpq.runtime.registry import JOBS

    candidates = sorted(n for n, spec in JOBS.items() if n in ops.rt.tasks and not spec.periodic
                        and spec.retries == 0 and list(inspect.signature(spec.func).parameters) == ["account_id"])
    for i in range(2 if candidates else 0):
        ops.dispatch(candidates[0], kwargs={"account_id": 990_000 + i})
    failures = 2 if candidates else 0
    for entry in ops.schedule():
        ops.trigger(entry.name)
    return failures


def capture(out: Path, view: str) -> None:
    from erpq.config import from_dict
    from erpq.ops import Actor, Ops
    from erpq.runtime import EmbeddedRunner, Runtime, set_current
    from tui.app import ErpqConsole, quiet_logging

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, name="receiver", daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="erpq-capture-") as tmp:
        settings = from_dict({
            "queue": {"url": "sqlite:///queue.db", "workers": 2},
            "database": {"url": "sqlite:///erpq.db"},
            "log": {"path": "erpq.log"},
            "webhooks": {"allow_hosts": ["127.0.0.1"]},
        }, source=str(Path(tmp) / "config.toml"), base_dir=tmp)
        rt = Runtime(settings)
        set_current(rt)
        quiet_logging()
        ops = Ops(rt, Actor.detect("console"))
        runner = EmbeddedRunner(rt)  # what erpq-console runs by default
        try:
            runner.start()
            failures = seed(ops, server.server_address[1])

            def settled() -> bool:
                c = ops.queue_counts()
                return c["pending"] == 0 and c["running"] == 0 and c["failed"] >= failures
            wait_until(settled, 60, "the queue draining")
            periodic = {e.name for e in ops.schedule()}
            wait_until(lambda: all(e.last_run_at is not None for e in ops.schedule() if e.name in periodic),
                       30, "every periodic task's run being recorded")
            app = ErpqConsole(ops, settings, mode="embedded runner")

            async def shoot() -> str:
                async with app.run_test(size=SIZE) as pilot:
                    app.action_show_view(view)
                    await pilot.pause()
                    app.poll_now()
                    deadline = time.monotonic() + 20
                    while app.first_screen_at is None or app.polls < 2:
                        if time.monotonic() > deadline:
                            raise SystemExit("console_capture: the console did not draw within 20 s")
                        await asyncio.sleep(0.05)
                    await pilot.pause(0.3)
                    return app.export_screenshot(title="erpq-console")

            svg = asyncio.run(shoot())
        finally:
            runner.stop()
            set_current(None)
            rt.close()
            server.shutdown()
    for word in ("fake", "fixture"):
        if word in svg.lower():
            raise SystemExit(f"console_capture: the picture contains {word!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(svg, encoding="utf-8")
    print(f"wrote {out} ({len(svg):,} bytes, {SIZE[0]}x{SIZE[1]}, {view} view)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, help="default: docs/console.svg")
    p.add_argument("--view", default="schedule",
                   help="schedule, queue, failed, health, batches, activity or runners")
    p.add_argument("--smoke", action="store_true",
                   help="write to a temporary file (unless -o is given), leaving docs/ alone")
    args = p.parse_args(argv)
    if args.output is not None:
        capture(args.output, args.view)
    elif args.smoke:
        with tempfile.TemporaryDirectory(prefix="erpq-capture-") as tmp:
            capture(Path(tmp) / "console.svg", args.view)
    else:
        capture(ROOT / "docs" / "console.svg", args.view)
    return 0


if __name__ == "__main__":
    sys.exit(main())
