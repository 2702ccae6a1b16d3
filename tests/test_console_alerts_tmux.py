"""Alerts in a real terminal (tmux): a read-only console starts no runner and
says so in red; a SIGKILLed runner on this host is shown dead within seconds
(by its PID, long before ``runner.dead_after_s``), at 80x24 and 200x50."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from polling import wait_until
from test_console_tmux import console_command, tmux, write_config  # noqa: F401 (tmux is a fixture)

pytestmark = pytest.mark.slow

CAPTURES = os.environ.get("ERPQ_CAPTURE_DIR")


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=["80x24", "200x50"])
def test_sigkilled_runner_alert_in_a_read_only_console(tmux, tmp_path: Path, size):  # noqa: F811
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("dead_after_s = 5.0", "dead_after_s = 120.0"))
    env = {"ERPQ_CONFIG": str(cfg), "TERM": "xterm-256color"}
    subprocess.run([sys.executable, "-m", "erpq.cli", "db", "upgrade"], cwd=tmp_path, env={**os.environ, **env},
                   check=True, capture_output=True)
    t = tmux(f"{console_command()} --read-only", tmp_path, env, size=size)
    screen = t.wait_for("no runner alive", timeout=30)  # --read-only started no embedded runner
    assert " erpq READ-ONLY │ attached │" in screen
    consumer = subprocess.Popen([sys.executable, "-m", "erpq.cli", "queue", "work"], cwd=tmp_path,
                                env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: "ALERT" not in t.screen(), timeout=30, message="the alert to clear once a runner runs")
        consumer.send_signal(signal.SIGKILL)
        died = f"died (pid {consumer.pid} gone)"
        if size[0] >= 200:
            # Both alerts fit at 200 columns; a console tmux started at its default width
            # (seen when the test's own session starts the tmux server) shows the second
            # behind "+1 more": the alerts screen below checks it either way.
            screen = wait_until(lambda: (s := t.screen()) and (died in s or "+1 more (:alerts)" in s) and s,
                                timeout=30, message="the dead runner's alert")
        else:  # at 80 columns the worst alert shows, the rest behind :alerts / !
            screen = t.wait_for("+1 more (:alerts)", timeout=30)
            assert all(len(line) <= 80 for line in screen.splitlines())
        assert "no runner alive" in screen
        if CAPTURES:
            Path(CAPTURES, f"alert-{size[0]}x{size[1]}.txt").write_text(screen)
        t.keys("!")
        assert died in t.wait_for(died, timeout=30)
    finally:
        consumer.kill()
        consumer.wait()
    t.keys("Escape")
    t.keys("q")
