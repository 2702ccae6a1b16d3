"""CLI edges of issue 8 (items 2, 5, 6): each edge with a test; metrics parsed
with prometheus_client's own parser; configuration from the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import test_cli
from conftest import free_port
from erpq.cli import main
from polling import wait_until

cfg = test_cli.cfg  # fixtures shared with test_cli
no_current_runtime = test_cli.no_current_runtime
run = test_cli.run

pytestmark = pytest.mark.usefixtures("no_current_runtime")


def erpq(cfg: str, *argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "erpq.cli", "--config", cfg, *argv], capture_output=True,
                          text=True, timeout=120, **kw)


# ---------------------------------------------------------------- item 5
@pytest.mark.parametrize("argv, message", [
    (("queue", "retry", "1", "--all"), "not both"),
    (("queue", "retry", "--task", "CliBoom"), "--task and --search select with --all"),
])
def test_retry_usage_errors(cfg, capsys, argv, message):
    assert run(cfg, "queue", "dispatch", "CliBoom") == 0
    assert run(cfg, "queue", "work", "--once") == 1
    capsys.readouterr()
    assert run(cfg, *argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert run(cfg, "queue", "list", "--pending", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []  # nothing retried


def test_work_once_exit_code_says_whether_the_job_failed(cfg, capsys):
    run(cfg, "queue", "dispatch", "CliEcho", "--args", "[1]")
    run(cfg, "queue", "dispatch", "CliBoom")
    assert run(cfg, "queue", "work", "--once") == 0
    assert run(cfg, "queue", "work", "--once") == 1
    assert run(cfg, "queue", "work", "--once") == 0  # nothing waiting is not a failure
    assert "No job waiting." in capsys.readouterr().out


def test_output_piped_into_head_ends_quietly(cfg):
    for _ in range(3):
        assert erpq(cfg, "queue", "dispatch", "erp:check-system-health").returncode == 0
    cmd = (f"{sys.executable} -m erpq.cli --config {cfg} jobs | head -c 10 >/dev/null; "
           f"{sys.executable} -c 'import sys; sys.stdout.write(\"x\" * 10)' >/dev/null")
    # A reader that leaves at once: the writer must not print a traceback.
    proc = subprocess.run(["bash", "-c", f"{sys.executable} -m erpq.cli --config {cfg} metrics | head -n 1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.startswith("# HELP")
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert cmd  # (kept for the record: the same holds for every command)


def test_flush_without_yes_and_without_a_terminal_refuses(cfg, capsys):
    run(cfg, "queue", "dispatch", "CliBoom")
    run(cfg, "queue", "work", "--once")
    capsys.readouterr()
    proc = erpq(cfg, "queue", "flush", stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "add --yes" in proc.stderr
    assert run(cfg, "queue", "failed", "--json") == 0
    assert len(json.loads(capsys.readouterr().out)) == 1  # still there


def test_health_check_is_a_probe(tmp_path, capsys):
    """The exit code follows the worst status of the reading just taken (whatever this machine measures)."""
    cfg = tmp_path / "config.toml"
    cfg.write_text('[queue]\nurl = "sqlite:///q.db"\n[database]\nurl = "sqlite:///db.sqlite"\n')
    code = run(str(cfg), "health", "--check", "--json")
    statuses = {h["status"] for h in json.loads(capsys.readouterr().out)}
    worst = "critical" if "critical" in statuses else "warning" if "warning" in statuses else "ok"
    assert code == {"ok": 0, "warning": 3, "critical": 4}[worst]
    assert run(str(cfg), "health") == 0  # reading the latest is not a probe


def test_out_of_range_cron_steps_are_refused(tmp_path, capsys):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[schedule.cron]\n"erp:check-system-health" = "*/61 * * * *"\n')
    assert main(["--config", str(cfg), "jobs"]) == 2
    assert "erp:check-system-health" in capsys.readouterr().err


def test_jobs_lists_jobs_and_periodic_tasks(cfg, capsys):
    assert run(cfg, "jobs", "--json") == 0
    items = {j["name"]: j for j in json.loads(capsys.readouterr().out)}
    assert items["erp:check-system-health"]["kind"] == "periodic"
    assert items["erp:check-system-health"]["schedule"] == "*/5 * * * *"
    assert items["DeliverWebhookJob"]["kind"] == "job"


@pytest.mark.parametrize("program", ["erpq", "erpq-console"])
def test_every_command_and_option_has_help(program):
    import argparse

    if program == "erpq":
        from erpq.cli import build_parser
    else:
        from tui.app import build_parser

    missing = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not choice.help:
                        missing.append(f"{path} {choice.dest}")
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not action.help and action.dest != "help":
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), program)
    assert missing == []


# ---------------------------------------------------------------- item 2
def test_metrics_parse_with_prometheus_client(cfg, capsys):
    run(cfg, "queue", "dispatch", "CliEcho", "--args", "[1]")
    run(cfg, "queue", "dispatch", "CliBoom")
    run(cfg, "queue", "dispatch", "CliEcho", "--args", "[2]")
    run(cfg, "queue", "work", "--once")
    run(cfg, "queue", "work", "--once")
    capsys.readouterr()
    assert run(cfg, "metrics") == 0
    text = capsys.readouterr().out
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    depth = {s.labels["state"]: s.value for s in fams["erpq_queue_jobs"].samples}
    assert depth["pending"] == 1 and depth["failed"] == 1
    runs = {(s.labels["task"], s.labels["status"]): s.value for s in fams["erpq_runs"].samples}
    assert runs[("CliEcho", "success")] == 1 and runs[("CliBoom", "failed")] == 1
    hist = fams["erpq_run_duration_seconds"]
    assert hist.type == "histogram"
    count = [s for s in hist.samples if s.name.endswith("_count") and s.labels["task"] == "CliEcho"]
    assert count[0].value == 1
    assert {s.labels["severity"]: s.value for s in fams["erpq_alerts"].samples}["critical"] >= 1
    assert "erpq_webhook_deliveries" in fams and "erpq_health_status" in fams


def test_metrics_output_file_is_written_whole(cfg, tmp_path):
    target = tmp_path / "erpq.prom"
    assert run(cfg, "metrics", "--output", str(target)) == 0
    assert list(text_string_to_metric_families(target.read_text()))
    assert not list(tmp_path.glob(".erpq-metrics-*"))


def test_stats_per_task(cfg, capsys):
    for i in range(3):
        run(cfg, "queue", "dispatch", "CliEcho", "--args", f"[{i}]")
    run(cfg, "queue", "dispatch", "CliBoom")
    for _ in range(4):
        run(cfg, "queue", "work", "--once")
    capsys.readouterr()
    assert run(cfg, "stats", "--json") == 0
    stats = {s["task_name"]: s for s in json.loads(capsys.readouterr().out)}
    assert stats["CliEcho"]["processed"] == 3 and stats["CliEcho"]["failed"] == 0
    assert stats["CliBoom"]["failed"] == 1
    assert stats["CliEcho"]["run_p95_s"] is not None and stats["CliEcho"]["wait_p50_s"] is not None
    assert sum(stats["CliEcho"]["spark"]) == 3


def test_runner_metrics_endpoint_and_healthz(tmp_path):
    port = free_port()
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[queue]\nurl = "sqlite:///q.db"\n[database]\nurl = "sqlite:///db.sqlite"\n'
                   f'[runner]\nheartbeat_s = 0.5\ndead_after_s = 2.0\nmetrics_port = {port}\n')
    proc = subprocess.Popen([sys.executable, "-m", "erpq.cli", "--config", str(cfg), "queue", "work"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def get(path):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()
            except OSError:
                return None

        status, body = wait_until(lambda: (r := get("/healthz")) and r[0] == 200 and r, timeout=60,
                                  message="/healthz to answer 200")
        assert json.loads(body)["runner"] == "alive"
        status, body = get("/metrics")
        assert status == 200
        names = {f.name for f in text_string_to_metric_families(body)}
        assert {"erpq_queue_jobs", "erpq_runner_alive", "erpq_runner_heartbeat_age_seconds"} <= names
        assert get("/nope")[0] == 404
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_alerts_command_is_a_probe(cfg, capsys):
    assert run(cfg, "alerts", "--check") == 4  # no runner alive
    assert "no runner alive" in capsys.readouterr().out


# ---------------------------------------------------------------- item 6
def test_environment_sets_any_key_and_config_show_names_the_source(cfg, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ERPQ_QUEUE__WORKERS", "7")
    monkeypatch.setenv("ERPQ_MAIL__PASSWORD", "hunter2")
    monkeypatch.setenv("ERPQ_DATABASE__URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert run(cfg, "config", "show", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    keys = {k["key"]: k for k in shown["keys"]}
    assert keys["queue.workers"] == {"key": "queue.workers", "value": 7, "source": "env ERPQ_QUEUE__WORKERS"}
    assert keys["queue.url"]["source"] == cfg
    assert keys["runner.max_recoveries"]["source"] == "default"
    assert keys["mail.password"]["value"] == "********"
    assert "hunter2" not in json.dumps(shown)
    assert not (tmp_path / "env.db").exists()  # config show creates nothing


def test_environment_values_are_validated_like_the_file(cfg, monkeypatch, capsys):
    monkeypatch.setenv("ERPQ_QUEUE__WORKERS", "many")
    assert run(cfg, "config", "show") == 2
    err = capsys.readouterr().err.strip()
    assert "ERPQ_QUEUE__WORKERS" in err and "queue.workers" in err and len(err.splitlines()) == 1


def test_passwords_in_urls_are_masked(monkeypatch, cfg, capsys):
    monkeypatch.setenv("ERPQ_QUEUE__URL", "redis://:s3cret@127.0.0.1:6379/0")
    assert run(cfg, "config", "show") == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "redis://:********@127.0.0.1:6379/0" in out


def test_env_var_not_in_a_config_file_names_no_test_variables(monkeypatch):
    from erpq.envconfig import env_keys

    env = {"ERPQ_CONFIG": "x", "ERPQ_TEST_POSTGRES": "y", "ERPQ_QUEUE__URL": "z", "OTHER__X": "w"}
    assert env_keys(env) == {("queue", "url"): ("ERPQ_QUEUE__URL", "z")}
    assert os.environ is not env
