"""Deploy files that follow the config and load as emitted (issue 8, item 7):
``systemd-analyze verify`` on the units, a real supervisord running the program
(and stopping it gracefully with SIGTERM), and the Dockerfile/compose file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import need
from erpq.cli import main
from polling import wait_until

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def install(tmp_path, monkeypatch) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[queue]\nurl = "sqlite:///q.db"\nworkers = 3\n[database]\nurl = "sqlite:///db.sqlite"\n'
                   '[log]\npath = "erpq.log"\n[runner]\nheartbeat_s = 0.5\ndead_after_s = 5.0\n'
                   'shutdown_timeout_s = 20\n')
    monkeypatch.chdir(tmp_path)
    return cfg


def render(capsys, cfg: Path, *argv: str) -> str:
    assert main(["--config", str(cfg), "deploy", *argv]) == 0
    return capsys.readouterr().out


def test_files_follow_the_config(install, capsys):
    unit = render(capsys, install, "systemd")
    assert "queue work --workers 3" in unit and "TimeoutStopSec=35" in unit
    assert "ExecStartPre=" in unit and "db upgrade" in unit and "KillSignal=SIGTERM" in unit
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes"):
        assert line in unit
    prog = render(capsys, install, "supervisor")
    assert "stopwaitsecs=35" in prog and "stopsignal=TERM" in prog and "db upgrade && exec" in prog
    split = render(capsys, install, "systemd", "--split")
    assert "erpq-scheduler.service" in split and "erpq-worker@.service" in split and "--no-periodic" in split


def test_unknown_user_is_refused(install, capsys):
    assert main(["--config", str(install), "deploy", "supervisor", "--user", "no-such-user-x"]) == 2
    assert "no such user" in capsys.readouterr().err


@pytest.mark.parametrize("split", [False, True], ids=["single", "split"])
def test_systemd_analyze_verify(install, capsys, tmp_path, split):
    tool = shutil.which("systemd-analyze")
    need("systemd-analyze", tool is not None, "not installed (apt-get install systemd)")
    text = render(capsys, install, "systemd", *(["--split"] if split else []))
    units = []
    for chunk in text.split("# /etc/systemd/system/")[1:]:
        name, body = chunk.split("\n", 1)
        path = tmp_path / name.strip()
        path.write_text(body)
        units.append(path)
    for path in units:
        target = path
        if path.name.endswith("@.service"):  # verify an instance of the template
            target = tmp_path / path.name.replace("@.service", "@1.service")
            target.symlink_to(path.name)
        proc = subprocess.run([tool, "verify", str(target)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "erpq" not in proc.stderr, proc.stderr  # no warning about our unit


def test_supervisord_loads_runs_and_stops_the_program_gracefully(install, capsys, tmp_path):
    sd, ctl = shutil.which("supervisord"), shutil.which("supervisorctl")
    need("supervisord", sd is not None and ctl is not None, "not installed (apt-get install supervisor)")
    (tmp_path / "erpq-runner.conf").write_text(render(capsys, install, "supervisor"))
    sock = tmp_path / "s.sock"
    conf = tmp_path / "supervisord.conf"
    conf.write_text(f"[unix_http_server]\nfile={sock}\n[supervisord]\nlogfile={tmp_path}/sd.log\n"
                    f"pidfile={tmp_path}/sd.pid\nchildlogdir={tmp_path}\n"
                    "[rpcinterface:supervisor]\n"
                    "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
                    f"[supervisorctl]\nserverurl=unix://{sock}\n[include]\nfiles={tmp_path}/erpq-runner.conf\n")
    proc = subprocess.Popen([sd, "-n", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def status() -> str:
        return subprocess.run([ctl, "-c", str(conf), "status"], capture_output=True, text=True).stdout

    def runners(include_stopped: bool = False) -> list:
        argv = ["runner", "list", "--json"] + (["--all"] if include_stopped else [])
        out = subprocess.run([sys.executable, "-m", "erpq.cli", "--config", str(install), *argv],
                             capture_output=True, text=True, cwd=tmp_path).stdout
        return json.loads(out) if out.strip().startswith("[") else []

    try:
        wait_until(lambda: "RUNNING" in status(), timeout=60, message=f"erpq-runner RUNNING: {status()}")
        live = wait_until(lambda: runners(), timeout=60, message="the runner to register")
        assert live[0]["workers"] == 3 and live[0]["alive"]
        subprocess.run([ctl, "-c", str(conf), "stop", "erpq-runner"], capture_output=True, timeout=60)
        assert "STOPPED" in status()  # stopped by SIGTERM within stopwaitsecs, not killed
        gone = runners(include_stopped=True)
        assert gone and gone[0]["stopped_at"] is not None  # marked stopped: a graceful stop
        assert "Stopping: waiting for running jobs" in (next(tmp_path.glob("erpq-runner*stdout*"))).read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_dockerfile_and_compose_file_follow_the_layout():
    docker = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "erpq" in docker and 'STOPSIGNAL SIGTERM' in docker and "db upgrade" in docker
    compose = (ROOT / "deploy" / "compose.yaml").read_text()
    for needle in ("redis:", "postgres:", "ERPQ_QUEUE__URL", "ERPQ_DATABASE__URL", "stop_grace_period"):
        assert needle in compose
    assert os.sep not in "x"
