"""erpq-console in a real terminal with an alert raised: writes text captures.

A fresh SQLite queue and database in a temporary directory, worked by a real
runner process (``erpq queue work``). The same seed as ``console_capture.py``
goes in through ``erpq.ops.Ops``: tenants, webhook subscriptions (one to a
receiver on 127.0.0.1, one to a closed port on 127.0.0.1, so its deliveries
fail), events, jobs that fail for real, and every periodic task triggered once.
Once the runner has worked it all, it is killed with SIGKILL, as the OOM killer
would. Then ``erpq-console --read-only`` (which starts no runner of its own) is
opened in tmux at 80x24 and at 200x50, and each screen is saved as text once
the dead runner's alert is on it.

    python bench/console_tmux.py            # docs/console-80x24.txt, docs/console-200x50.txt
    python bench/console_tmux.py -o /tmp/captures
    python bench/console_tmux.py --smoke    # 80x24 only, to a temporary folder

Needs tmux (apt-get install tmux).
"""

from __future__ import annotations

import argparse
import http.server
import importlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The seed and the receiver are bench/console_capture.py's (shared with the SVG picture).
sys.path.insert(0, str(Path(__file__).resolve().parent))
console_capture = importlib.import_module("console_capture")

SIZES = [(80, 24), (200, 50)]
CONFIG = """\
[queue]
url = "sqlite:///queue.db"
workers = 2
[database]
url = "sqlite:///erpq.db"
[log]
path = "erpq.log"
[runner]
heartbeat_s = 1
[console]
poll_s = 0.5
[webhooks]
allow_hosts = ["127.0.0.1"]
"""


class Terminal:
    """One tmux session on a private tmux server (its own socket)."""

    def __init__(self, socket: str, size: tuple[int, int], cwd: Path, env: dict[str, str], command: str) -> None:
        self.socket, self.name = socket, f"erpq-{uuid.uuid4().hex[:6]}"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        self._tmux("new-session", "-d", "-s", self.name, "-x", str(size[0]), "-y", str(size[1]),
                   "-c", str(cwd), f"env {exports} {command}")
        # A session created by the command that starts the tmux server can come up at
        # 80x24 whatever -x/-y say: size the window explicitly.
        self._tmux("resize-window", "-t", self.name, "-x", str(size[0]), "-y", str(size[1]))

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True,
                              text=True).stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", self.name, *keys)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-session", "-t", self.name], capture_output=True)


def wait_screen(term: Terminal, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        screen = term.screen()
        if needle in screen:
            return screen
        if time.monotonic() > deadline:
            raise SystemExit(f"console_tmux: {needle!r} not on the screen within {timeout:g} s:\n{screen}")
        time.sleep(0.2)


def capture(out_dir: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    from erpq.config import load
    from erpq.ops import Actor, Ops
    from erpq.runtime import Runtime, set_current

    if shutil.which("tmux") is None:
        raise SystemExit("console_tmux: tmux is not installed (apt-get install tmux)")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), console_capture._Receiver)
    threading.Thread(target=server.serve_forever, name="receiver", daemon=True).start()
    written: list[Path] = []
    socket = f"erpq-capture-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="erpq-tmux-") as tmp:
        cwd = Path(tmp)
        cfg = cwd / "config.toml"
        cfg.write_text(CONFIG)
        env = {**os.environ, "ERPQ_CONFIG": str(cfg)}
        erpq = [sys.executable, "-m", "erpq.cli"]
        subprocess.run([*erpq, "db", "upgrade"], cwd=cwd, env=env, check=True, capture_output=True)
        runner = subprocess.Popen([*erpq, "queue", "work"], cwd=cwd, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rt = Runtime(load(cfg))
        set_current(rt)
        terms: list[Terminal] = []
        try:
            ops = Ops(rt, Actor.detect("bench"))
            console_capture.wait_until(lambda: ops.runners() != [], 30, "the runner starting")
            failures = console_capture.seed(ops, server.server_address[1])

            def settled() -> bool:
                c = ops.queue_counts()
                return c["pending"] == 0 and c["running"] == 0 and c["failed"] >= failures
            console_capture.wait_until(settled, 90, "the queue draining")
            runner.send_signal(signal.SIGKILL)  # the runner dies; the console must say so
            runner.wait()
            for size in sizes:
                term = Terminal(socket, size, cwd, {"ERPQ_CONFIG": str(cfg), "TERM": "xterm-256color"},
                                f"{shlex.quote(sys.executable)} -m tui.app --read-only")
                terms.append(term)
                screen = wait_screen(term, "ALERT", 60)
                time.sleep(1.5)  # two more polls: the counts and panels settle
                screen = term.screen()
                lines = screen.rstrip("\n").splitlines()
                if any(len(line) > size[0] for line in lines):
                    raise SystemExit(f"console_tmux: a line is wider than {size[0]} columns")
                path = out_dir / f"console-{size[0]}x{size[1]}.txt"
                out_dir.mkdir(parents=True, exist_ok=True)
                path.write_text("\n".join(line.rstrip() for line in lines) + "\n", encoding="utf-8")
                written.append(path)
                print(f"wrote {path} ({size[0]}x{size[1]}, {screen.count(chr(10))} lines)")
                term.keys("q")
        finally:
            for term in terms:
                term.close()
            subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)
            if runner.poll() is None:
                runner.kill()
                runner.wait()
            set_current(None)
            rt.close()
            server.shutdown()
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, help="folder for the captures (default: docs/)")
    p.add_argument("--smoke", action="store_true",
                   help="80x24 only, to a temporary folder (unless -o is given), leaving docs/ alone")
    args = p.parse_args(argv)
    sizes = SIZES[:1] if args.smoke else SIZES
    if args.output is not None:
        capture(args.output, sizes)
    elif args.smoke:
        with tempfile.TemporaryDirectory(prefix="erpq-tmux-out-") as tmp:
            capture(Path(tmp), sizes)
    else:
        capture(ROOT / "docs", sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
