"""The log (issue 8): one format for runner, scheduler and CLI; JSON lines on
request; stderr under a supervisor, the file otherwise; a failing job's traceback
written once (Huey's logger and erpq's handlers, huey_consumer's own handler);
configured secrets never written. Real runner subprocesses with a job that fails
(``GreetBoomJob`` of the tests' fixture capability)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from polling import wait_until

TESTS = Path(__file__).parent
BIN = Path(sys.executable).parent
SECRET = "hunter2-very-secret"
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+ \[[^\]]+\] ")


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ERPQ_") and k not in ("JOURNAL_STREAM", "SUPERVISOR_ENABLED")}
    cfg = tmp_path / "config.toml"
    if not cfg.exists():
        cfg.write_text('[queue]\nurl = "sqlite:///q.db"\nworkers = 1\n[database]\nurl = "sqlite:///db.sqlite"\n'
                       '[log]\npath = "erpq.log"\n[runner]\nheartbeat_s = 0.5\ndead_after_s = 5.0\n'
                       'periodic_check_s = 1\n')
    return {**env, "PYTHONPATH": str(TESTS), "ERPQ_CAPABILITIES": "capfixture.capability",
            "ERPQ_CONFIG": str(cfg), "ERPQ_MAIL__PASSWORD": SECRET, **extra}


def erpq(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "erpq.cli", *argv], cwd=tmp_path, env=env_for(tmp_path, **env),
                          capture_output=True, text=True, timeout=120)


def dispatch_boom(tmp_path: Path, **env: str) -> str:
    proc = erpq(tmp_path, "queue", "dispatch", "GreetBoomJob", "--args", json.dumps([f"kaput {SECRET}"]), **env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("job ")[1].split()[0]


def test_supervisors_are_recognised_by_what_they_set():
    from erpq.runtime.log import under_supervisor

    assert under_supervisor({"JOURNAL_STREAM": "8:12345"}) == "systemd"
    assert under_supervisor({"SUPERVISOR_ENABLED": "1"}) == "supervisord"
    assert under_supervisor({"TERM": "xterm"}) is None


def test_under_a_supervisor_the_log_goes_to_stderr_with_each_traceback_once(tmp_path):
    supervisor = {"SUPERVISOR_ENABLED": "1"}
    job_id = dispatch_boom(tmp_path, **supervisor)
    proc = erpq(tmp_path, "queue", "work", "--burst", **supervisor)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert err.count("Traceback (most recent call last)") == 1, err
    assert f"Processing job: GreetBoomJob {job_id}" in err and f"Failed job: GreetBoomJob {job_id}" in err
    assert SECRET not in err and "kaput ********" in err
    assert not (tmp_path / "erpq.log").exists()  # not to a file
    for line in err.splitlines():  # one format: every record line, whoever logged it
        if line and not line.startswith((" ", "Traceback", "RuntimeError")):
            assert TEXT_LINE.match(line), line


def test_by_default_the_log_goes_to_the_file_in_the_same_format(tmp_path):
    dispatch_boom(tmp_path)
    proc = erpq(tmp_path, "queue", "work", "--burst")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and proc.stderr == ""
    text = (tmp_path / "erpq.log").read_text()
    assert text.count("Traceback (most recent call last)") == 1 and SECRET not in text
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith((" ", "Traceback", "RuntimeError"))]
    assert any("ERROR huey [erpq-burst-1] Unhandled exception in task" in ln for ln in lines)
    for line in lines:
        assert TEXT_LINE.match(line), line


def test_json_lines_parse_and_carry_level_logger_message_task_and_job_id(tmp_path):
    env = {"ERPQ_LOG__FORMAT": "json", "ERPQ_LOG__OUTPUT": "stderr"}
    job_id = dispatch_boom(tmp_path, **env)
    proc = erpq(tmp_path, "schedule", "run", "greet:tick", **env)
    cli_lines = [json.loads(line) for line in proc.stderr.splitlines()]
    assert any(r["logger"] == "erpq.runner" and r["message"].startswith("Running scheduled command: greet:tick")
               for r in cli_lines)
    proc = erpq(tmp_path, "queue", "work", "--burst", **env)
    assert proc.returncode == 1
    records = [json.loads(line) for line in proc.stderr.splitlines()]  # every line is one JSON object
    for r in records:
        assert {"time", "level", "logger", "thread", "message"} <= set(r) and r["time"].endswith("Z")
    mine = [r for r in records if r.get("job_id") == job_id]
    assert {r["task"] for r in mine} == {"GreetBoomJob"}
    by_logger = {(r["logger"], r["level"]): r for r in mine}
    assert by_logger[("erpq.runner", "INFO")]["message"] == f"Processing job: GreetBoomJob {job_id}"
    assert by_logger[("erpq.greet", "INFO")]["message"] == "about to fail: kaput ********"  # the job's own line
    error = by_logger[("huey", "ERROR")]
    assert error["message"] == f"Unhandled exception in task {job_id}."
    assert "RuntimeError: kaput ********" in error["exc"]
    assert by_logger[("erpq.runner", "WARNING")]["message"].startswith(f"Failed job: GreetBoomJob {job_id}")
    assert sum("Traceback" in json.dumps(r) for r in records) == 1
    assert SECRET not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", ["erpq", "huey_consumer"])
def test_a_long_running_runner_writes_a_traceback_once(tmp_path, command):
    """`erpq queue work`, and `huey_consumer` (which puts a handler of its own on Huey's logger)."""
    env = {"SUPERVISOR_ENABLED": "1"}
    dispatch_boom(tmp_path, **env)
    if command == "erpq":
        argv = [sys.executable, "-m", "erpq.cli", "queue", "work", "--workers", "1"]
    else:
        exe = shutil.which("huey_consumer", path=str(BIN))
        assert exe, "huey_consumer is installed with huey"
        argv = [exe, "erpq.tasks.huey", "-w", "1", "-k", "thread"]
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env_for(tmp_path, **env), stdout=subprocess.DEVNULL,
                                stderr=err)
        try:
            wait_until(lambda: "Failed job: GreetBoomJob" in err_path.read_text(), timeout=60,
                       message="the failed job in stderr")
            time.sleep(0.5)  # anything logged right after it
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    text = err_path.read_text()
    assert text.count("Traceback (most recent call last)") == 1, text
    assert text.count("Unhandled exception in task") == 1 and SECRET not in text


@pytest.mark.parametrize("key, value", [("format", "xml"), ("output", "syslog")])
def test_bad_log_settings_are_one_line_errors(tmp_path, key, value):
    proc = erpq(tmp_path, "config", "show", **{f"ERPQ_LOG__{key.upper()}": value})
    assert proc.returncode == 2
    assert f"log.{key}" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_the_console_never_logs_to_its_terminal(tmp_path, monkeypatch):
    """Even under a supervisor, or told stderr: the console's embedded runner logs to the file."""
    from erpq.config import load
    from erpq.runtime.log import destination
    from tui.app import for_console

    env = env_for(tmp_path)
    monkeypatch.setenv("ERPQ_LOG__OUTPUT", "stderr")
    monkeypatch.setenv("SUPERVISOR_ENABLED", "1")
    settings = load(env["ERPQ_CONFIG"])
    assert destination(settings) == "stderr"
    assert destination(for_console(settings)) == str(tmp_path / "erpq.log")
