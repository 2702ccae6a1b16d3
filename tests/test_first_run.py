"""``erpq`` run where there is no config and no database (issue 8): it says which
config it uses and creates nothing, except ``erpq db upgrade`` and the documented
first start (``erpq-console`` on the SQLite default under ./var)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ERPQ = shutil.which("erpq", path=str(Path(sys.executable).parent))


def clean_env() -> dict[str, str]:
    """The environment without any ERPQ_ variable (no config, no key override)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ERPQ_")}


def erpq(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    cmd = [ERPQ] if ERPQ else [sys.executable, "-m", "erpq.cli"]
    return subprocess.run([*cmd, *argv], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("argv", [("queue", "list"), ("schedule", "list"), ("tenant", "add", "acme")])
def test_no_config_and_no_database_refuses_and_creates_nothing(tmp_path, argv):
    proc = erpq(tmp_path, *argv)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{tmp_path}/var/erpq.db does not exist" in err
    assert "no config file found" in err and "erpq db upgrade" in err
    assert proc.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no ./var, no log, nothing


def test_config_show_and_db_current_say_what_is_used_and_create_nothing(tmp_path):
    proc = erpq(tmp_path, "config", "show")
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()[:2]
    assert first.startswith("config: none found") and "default_config.toml" in first and str(tmp_path) in first
    assert second == f"database: {tmp_path}/var/erpq.db (does not exist: 'erpq db upgrade' creates it)"
    proc = erpq(tmp_path, "db", "current")
    assert proc.returncode == 0 and "current: none (no database at" in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_db_upgrade_creates_the_default_database_then_commands_work(tmp_path):
    proc = erpq(tmp_path, "db", "upgrade")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "var" / "erpq.db").exists()
    proc = erpq(tmp_path, "queue", "list")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("pending: 0")
    assert erpq(tmp_path, "config", "show").stdout.splitlines()[1] == f"database: {tmp_path}/var/erpq.db"


def test_a_config_file_naming_a_sqlite_database_still_creates_it(tmp_path):
    """Only the packaged defaults are guarded: a config file is a decision to use its database."""
    (tmp_path / "config.toml").write_text('[database]\nurl = "sqlite:///data/my.db"\n'
                                          '[queue]\nurl = "sqlite:///data/q.db"\n')
    proc = erpq(tmp_path, "queue", "list")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "data" / "my.db").exists()
    assert erpq(tmp_path, "config", "show").stdout.splitlines()[0] == "config: config.toml"


@pytest.mark.slow
def test_console_first_start_creates_var_on_a_fresh_directory(tmp_path):
    """README's first start: erpq-console with no config creates ./var and runs."""
    from conftest import need
    from test_console_tmux import TMUX, Tmux, console_command

    need("tmux", TMUX is not None, "not installed (apt-get install tmux)")
    import uuid

    t = Tmux(f"erpq-test-{uuid.uuid4().hex[:8]}")
    env = {**clean_env(), "TERM": "xterm-256color", "PS1": "$ "}
    exports = " ".join(f"{k}={v!r}" for k, v in env.items() if k in ("TERM", "PS1", "PATH", "HOME"))
    subprocess.run([TMUX, "new-session", "-d", "-s", t.name, "-x", "100", "-y", "30", "-c", str(tmp_path),
                    f"env -i {exports} bash --norc --noprofile"], check=True)
    try:
        t.wait_for("$")
        t.keys(f"{console_command()}; echo EXIT=$?", "Enter")
        t.wait_for("1 Schedule", timeout=60)
        assert (tmp_path / "var" / "erpq.db").exists() and (tmp_path / "var" / "queue.db").exists()
        t.keys("q")
        t.wait_for("EXIT=0", timeout=60)
    finally:
        t.kill()
