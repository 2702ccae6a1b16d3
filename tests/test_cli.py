"""The erpq CLI: commands in-process (main()) and the installed script once.

Bad input (config, JSON, unknown task, missing record) gives one line on
stderr with the reason and the right exit code, and changes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from erpq.cli import main
from erpq.runtime import job

pytestmark = pytest.mark.usefixtures("no_current_runtime")


@job("CliEcho")
def cli_echo(x=None, y=None):
    return x


@job("CliBoom")
def cli_boom(n=0):
    raise ValueError(f"kaboom {n}")


@pytest.fixture
def no_current_runtime():
    from erpq.runtime import set_current

    yield
    set_current(None)


@pytest.fixture
def cfg(tmp_path: Path) -> str:
    path = tmp_path / "config.toml"
    path.write_text(
        '[queue]\nurl = "sqlite:///q.db"\nworkers = 2\n'
        '[database]\nurl = "sqlite:///db.sqlite"\n'
        '[log]\npath = "erpq.log"\n'
        '[runner]\nheartbeat_s = 0.5\ndead_after_s = 2.0\nperiodic_check_s = 1\n'
    )
    return str(path)


def run(cfg: str, *argv: str) -> int:
    return main(["--config", cfg, *argv])


def out_json(capsys) -> list:
    return json.loads(capsys.readouterr().out)


def state(cfg: str) -> dict:
    """What a command could have changed: queue sizes and table row counts."""
    from erpq.config import load
    from erpq.runtime import Runtime

    rt = Runtime(load(cfg))
    try:
        counts = {"pending": rt.huey.pending_count(), "scheduled": rt.huey.scheduled_count()}
        with rt.read_session() as s:
            for table in ("failed_jobs", "job_runs", "tenants", "users", "audit_log", "schedule_state"):
                counts[table] = s.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
        return counts
    finally:
        rt.close()


# ---------------------------------------------------------------- happy paths


def test_schedule_list_json_has_the_documented_fields(cfg, capsys):
    assert run(cfg, "schedule", "list", "--json") == 0
    rows = out_json(capsys)
    names = {r["name"] for r in rows}
    assert {"erp:check-system-health", "erp:retry-webhook-deliveries"} <= names
    health = next(r for r in rows if r["name"] == "erp:check-system-health")
    assert set(health) >= {"name", "expression", "description", "paused", "last_run_at", "last_status",
                           "last_duration_s", "next_run_at"}
    assert health["expression"] == "*/5 * * * *"
    assert health["description"].lower().startswith("every 5 minutes")
    assert health["next_run_at"].endswith("Z") and health["last_run_at"] is None


def test_schedule_run_then_work_once_records_the_run(cfg, capsys):
    assert run(cfg, "schedule", "run", "erp:check-system-health") == 0
    assert "Running scheduled command: erp:check-system-health" in capsys.readouterr().out
    assert run(cfg, "queue", "work", "--once") == 0
    assert "Processed job: erp:check-system-health" in capsys.readouterr().out
    assert run(cfg, "schedule", "list", "--json") == 0
    health = next(r for r in out_json(capsys) if r["name"] == "erp:check-system-health")
    assert health["last_status"] == "success" and health["last_duration_s"] > 0
    assert run(cfg, "health", "--json") == 0
    readings = out_json(capsys)
    assert readings[0]["tenant"] == "host" and readings[0]["status"] in ("ok", "warning", "critical")
    log = (Path(cfg).parent / "erpq.log").read_text()
    assert "Running scheduled command: erp:check-system-health" in log
    assert "Processing job: erp:check-system-health" in log


def test_pause_and_resume_are_persisted(cfg, capsys):
    assert run(cfg, "schedule", "pause", "erp:check-system-health") == 0
    assert capsys.readouterr().out == "Paused erp:check-system-health\n"
    assert run(cfg, "schedule", "list", "--json") == 0
    rows = {r["name"]: r for r in out_json(capsys)}
    assert rows["erp:check-system-health"]["paused"] is True
    assert rows["erp:check-system-health"]["next_run_at"] is None
    assert run(cfg, "schedule", "resume", "erp:check-system-health") == 0
    capsys.readouterr()
    assert run(cfg, "schedule", "list", "--json") == 0
    rows = {r["name"]: r for r in out_json(capsys)}
    assert rows["erp:check-system-health"]["paused"] is False


def test_dispatch_list_fail_retry_forget_restore_flush(cfg, capsys):
    assert run(cfg, "queue", "dispatch", "CliBoom", "--args", '{"n": 7}') == 0
    assert run(cfg, "queue", "dispatch", "CliEcho", "--args", "[1, 2]") == 0
    capsys.readouterr()
    assert run(cfg, "queue", "list", "--pending", "--json") == 0
    pending = out_json(capsys)
    assert [p["task_name"] for p in pending] == ["CliBoom", "CliEcho"]
    assert pending[0]["args_summary"] == "n=7" and pending[1]["args_summary"] == "1, 2"
    assert run(cfg, "queue", "work", "--once") == 1  # CliBoom failed: a script sees it
    assert run(cfg, "queue", "work", "--once") == 0
    capsys.readouterr()
    assert run(cfg, "queue", "failed", "--json") == 0
    (failed,) = out_json(capsys)
    assert failed["task_name"] == "CliBoom" and failed["exception"] == "kaboom 7"
    assert run(cfg, "queue", "failed", "--search", "KaBoom", "--json") == 0
    assert [f["id"] for f in out_json(capsys)] == [failed["id"]]  # search ignores case
    assert run(cfg, "queue", "show", str(failed["id"])) == 0
    shown = capsys.readouterr().out
    assert "Traceback" in shown and "ValueError: kaboom 7" in shown
    assert run(cfg, "queue", "failed", "--clusters", "--json") == 0
    (cluster,) = out_json(capsys)
    assert cluster["message"] == "kaboom <n>" and cluster["count"] == 1
    assert run(cfg, "queue", "retry", str(failed["id"])) == 0
    capsys.readouterr()
    assert state(cfg)["pending"] == 1
    assert run(cfg, "queue", "retry", str(failed["id"])) == 1  # cannot be retried twice
    assert "already retried" in capsys.readouterr().err
    assert run(cfg, "queue", "work", "--once") == 1
    capsys.readouterr()
    assert run(cfg, "queue", "failed", "--json") == 0
    (again,) = out_json(capsys)
    assert again["id"] != failed["id"]
    assert run(cfg, "queue", "forget", str(again["id"])) == 0
    capsys.readouterr()
    assert run(cfg, "queue", "failed", "--json") == 0
    assert out_json(capsys) == []
    assert run(cfg, "queue", "restore", str(again["id"])) == 0
    assert run(cfg, "queue", "flush", "--yes") == 0
    assert "Flushed 1" in capsys.readouterr().out
    assert run(cfg, "audit", "--json") == 0
    actions = [a["action"] for a in out_json(capsys)]
    assert {"queue.dispatch", "failed.retry", "failed.forget", "failed.restore", "failed.flush"} <= set(actions)


@pytest.mark.parametrize("action", ["forget", "restore"])
def test_forget_or_restore_of_an_unknown_id_is_an_error(cfg, capsys, action):
    before = state(cfg)
    assert run(cfg, "queue", action, "999999") == 1
    err = capsys.readouterr().err
    assert "999999" in err and err.count("\n") == 1
    assert state(cfg) == before


def test_tenants_and_users(cfg, capsys):
    assert run(cfg, "tenant", "add", "acme", "--name", "Acme Ltd") == 0
    assert run(cfg, "user", "add", "Ann", "--tenant", "acme", "--email", "ann@acme.test") == 0
    capsys.readouterr()
    assert run(cfg, "user", "list", "--json") == 0
    (user,) = out_json(capsys)
    assert user["tenant"] == "acme" and user["email"] == "ann@acme.test"


def test_deploy_prints_units_with_this_install(cfg, capsys):
    assert run(cfg, "deploy", "systemd") == 0
    unit = capsys.readouterr().out
    assert "queue work --workers 2" in unit and "KillSignal=SIGTERM" in unit
    assert f"ERPQ_CONFIG={Path(cfg).resolve()}" in unit
    assert run(cfg, "deploy", "supervisor") == 0
    assert "stopsignal=TERM" in capsys.readouterr().out


# ---------------------------------------------------------------- bad input changes nothing


@pytest.mark.parametrize("argv, message", [
    (["queue", "dispatch", "NoSuchJob"], "unknown task 'NoSuchJob'"),
    (["queue", "dispatch", "CliEcho", "--args", "{not json"], "--args: not valid JSON"),
    (["queue", "dispatch", "CliEcho", "--args", '"a string"'], "--args: expected a JSON array"),
    (["queue", "dispatch", "CliEcho", "--args", '{"timeout": 3}'], "reserved by Huey"),
    (["schedule", "run", "erp:nope"], "unknown scheduled task 'erp:nope'"),
    (["schedule", "pause", "erp:nope"], "unknown scheduled task 'erp:nope'"),
    (["queue", "retry", "999"], "no failed job awaiting retry with id 999"),
    (["queue", "forget", "999"], "no failed job with id 999"),
    (["queue", "show", "999"], "no failed job with id 999"),
    (["queue", "cancel", "nope"], "no pending or scheduled job with id 'nope'"),
    (["batch", "cancel", "nope"], "no batch with id 'nope'"),
    (["lock", "release", "nope"], "no lock named 'nope'"),
    (["user", "add", "Bob", "--tenant", "ghost"], "no tenant 'ghost'"),
    (["tenant", "add", "Bad Slug"], "tenant slug 'Bad Slug' is invalid"),
])
def test_bad_input_is_one_line_and_changes_nothing(cfg, capsys, argv, message):
    before = state(cfg)
    assert run(cfg, *argv) == 1
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and err.startswith("erpq: error: ")
    assert state(cfg) == before


def test_bad_config_exits_2_naming_file_and_key(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[queue]\nurl = "ftp://x"\n')
    assert main(["--config", str(bad), "schedule", "list"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: queue.url: unsupported scheme 'ftp'" in err and err.count("\n") == 1
    bad.write_text('[schedule.cron]\n"erp:check-system-health" = "61 * * * *"\n')
    assert main(["--config", str(bad), "schedule", "list"]) == 2
    assert "schedule.cron.erp:check-system-health: invalid cron expression" in capsys.readouterr().err


def test_usage_errors_exit_2(cfg, capsys):
    with pytest.raises(SystemExit) as exc:
        run(cfg, "queue", "retry", "not-a-number")
    assert exc.value.code == 2
    assert run(cfg, "queue", "retry") == 2
    assert "give failed job ids, or --all" in capsys.readouterr().err


def test_installed_script_runs(cfg):
    exe = shutil.which("erpq", path=os.path.dirname(sys.executable)) or shutil.which("erpq")
    assert exe, "the erpq console script is not installed"
    done = subprocess.run([exe, "--config", cfg, "schedule", "list", "--json"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert any(r["name"] == "erp:check-system-health" for r in json.loads(done.stdout))
    done = subprocess.run([exe, "--config", cfg + ".missing", "schedule", "list"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.strip().endswith("file not found")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("section, url, what", [
    ("database", "postgresql+psycopg://erpq:s3cret@127.0.0.1:1/erpq", "cannot use the database"),
    ("queue", "redis://:s3cret@127.0.0.1:1/0", "cannot reach the queue store"),
])
def test_unreachable_server_is_one_line_without_the_password(tmp_path, capsys, section, url, what):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[{section}]\nurl = "{url}"\n[log]\npath = "erpq.log"\n'
                   + ('[database]\nurl = "sqlite:///db.sqlite"\n' if section == "queue" else ""))
    assert main(["--config", str(cfg), "queue", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"erpq: error: {what} ") and err.count("\n") == 1
    assert "s3cret" not in err and ":***@127.0.0.1:1" in err
