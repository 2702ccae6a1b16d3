"""erpq-console in a real terminal (tmux): start it with its embedded runner,
trigger a task, see its run appear, quit, and check the process is gone and the
terminal restored; then the same start ended by a dropped connection (SIGHUP).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import need
from erpq.config import load
from erpq.ops import Ops
from erpq.runtime import Runtime
from polling import wait_until

pytestmark = pytest.mark.slow

TMUX = shutil.which("tmux")


def console_command() -> str:
    exe = shutil.which("erpq-console", path=str(Path(sys.executable).parent)) or shutil.which("erpq-console")
    return shlex.quote(exe) if exe else f"{shlex.quote(sys.executable)} -m tui.app"


def write_config(tmp: Path) -> Path:
    cfg = tmp / "config.toml"
    cfg.write_text(
        '[queue]\nurl = "sqlite:///queue.db"\nworkers = 2\n'
        '[database]\nurl = "sqlite:///erpq.db"\n'
        '[log]\npath = "erpq.log"\n'
        '[runner]\nheartbeat_s = 0.5\ndead_after_s = 5.0\nperiodic_check_s = 1\nshutdown_timeout_s = 10\n'
        '[console]\npoll_s = 0.5\n'
    )
    return cfg


class Tmux:
    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, *args: str) -> str:
        return subprocess.run([TMUX, *args], check=True, capture_output=True, text=True).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.name)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        return wait_until(lambda: (s := self.screen()) and text in s and s, timeout=timeout, interval=0.1,
                          message=f"{text!r} on the screen")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.name, *keys)

    def flag(self, fmt: str) -> str:
        return self.run("display-message", "-p", "-t", self.name, fmt).strip()

    def kill(self) -> None:
        subprocess.run([TMUX, "kill-session", "-t", self.name], capture_output=True)


@pytest.fixture
def tmux():
    need("tmux", TMUX is not None, "not installed (apt-get install tmux)")
    sessions: list[Tmux] = []

    def start(command: str, cwd: Path, env: dict[str, str], size: tuple[int, int] = (100, 30)) -> Tmux:
        t = Tmux(f"erpq-test-{uuid.uuid4().hex[:8]}")
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        subprocess.run([TMUX, "new-session", "-d", "-s", t.name, "-x", str(size[0]), "-y", str(size[1]),
                        "-c", str(cwd), f"env {exports} {command}"], check=True)
        sessions.append(t)
        return t

    yield start
    for t in sessions:
        t.kill()


def stopped_cleanly(cfg: Path) -> bool:
    rt = Runtime(load(cfg))
    try:
        ops = Ops(rt)
        return not ops.runners() and not ops.locks() and ops.runners(include_stopped=True) != []
    finally:
        rt.close()


def test_console_in_a_real_terminal(tmux, tmp_path: Path):
    cfg = write_config(tmp_path)
    env = {"ERPQ_CONFIG": str(cfg), "TERM": "xterm-256color", "PS1": "$ "}
    t = tmux("bash --norc --noprofile", tmp_path, env)
    t.wait_for("$")
    t.keys(f"{console_command()}; echo EXIT=$?", "Enter")
    screen = t.wait_for("1 Schedule")
    assert "embedded runner" in screen
    t.wait_for("erp:check-system-health")
    assert t.flag("#{alternate_on}") == "1"

    # Run the first periodic task (sorted; which one depends on the capabilities installed) now.
    t.keys("t")
    screen = t.wait_for("$ erpq schedule run ")
    name = screen.split("$ erpq schedule run ", 1)[1].split()[0]
    t.keys("6")
    wait_until(lambda: any(name in line and "success" in line
                           for line in t.screen().splitlines()),
               timeout=30, interval=0.2, message="the triggered run in Activity")

    t.keys("q")
    screen = t.wait_for("EXIT=0", timeout=30)
    assert "Traceback" not in screen
    assert t.flag("#{alternate_on}") == "0"  # back from the alternate screen
    assert t.flag("#{cursor_flag}") == "1"  # cursor visible again
    assert t.flag("#{mouse_any_flag}") == "0" and t.flag("#{mouse_all_flag}") == "0"
    t.keys("stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo | sort | tr '\\n' +; echo", "Enter")
    t.wait_for("echo+icanon+")
    assert stopped_cleanly(cfg)


def test_dropped_connection_stops_the_runner_cleanly(tmux, tmp_path: Path):
    cfg = write_config(tmp_path)
    t = tmux(console_command(), tmp_path, {"ERPQ_CONFIG": str(cfg), "TERM": "xterm-256color"})
    t.wait_for("erp:check-system-health")
    pid = int(t.flag("#{pane_pid}"))
    rt = Runtime(load(cfg))
    try:
        wait_until(lambda: Ops(rt).runners(), timeout=10, message="the embedded runner's heartbeat")
    finally:
        rt.close()
    t.kill()  # the pane's terminal goes away: SIGHUP, like a dropped SSH connection

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    try:
        wait_until(gone, timeout=60, message=f"console process {pid} to exit")
    except AssertionError:
        os.kill(pid, signal.SIGUSR1)  # the console dumps its threads' stacks to its log
        time.sleep(1)
        raise AssertionError(f"console {pid} did not exit after SIGHUP; its threads:\n"
                             + (tmp_path / "erpq.log").read_text()[-6000:]) from None
    assert stopped_cleanly(cfg)


@pytest.mark.parametrize("colours", [
    {"TERM": "xterm", "NO_COLOR": "1"},  # 16 colours, monochrome
    {"TERM": "xterm-256color", "COLORTERM": "truecolor"},
], ids=["16-colours-no-color", "truecolor"])
def test_usable_at_80x24_in_each_colour_mode(tmux, tmp_path: Path, colours: dict[str, str]):
    """Every view's tab, the counts and the footer keys fit in 80x24, whatever the colours."""
    cfg = write_config(tmp_path)
    t = tmux(f"{console_command()} --attach", tmp_path, {"ERPQ_CONFIG": str(cfg), **colours}, size=(80, 24))
    wanted = ("1 Schedule", "2 Queue", "3 Failed", "4 Health", "5 Batches", "6 Activity", "7 Runners",
              "pending 0", "erp:check-system-health", "q Quit")
    wait_until(lambda: all(w in t.screen() for w in wanted), timeout=20,
               message=f"all of {wanted} on the 80x24 screen")
    t.keys("3")
    assert "failed" in t.wait_for("3 Failed").lower()
    t.keys("q")

    def quit_() -> bool:
        try:
            return "erp:check-system-health" not in t.screen()
        except subprocess.CalledProcessError:  # the pane closed with the console
            return True

    wait_until(quit_, timeout=20, message="the console to quit")
