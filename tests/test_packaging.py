"""Packaging (issue 8): the licence and metadata, database and queue drivers as
extras (a missing one is a one-line error naming the extra; the SQLite default
needs none of them), and the container files installing the right extras."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DRIVERS = ("psycopg", "psycopg2", "pymysql", "MySQLdb", "redis")

# Runs erpq as if the named driver modules were not installed.
WITHOUT = """
import sys
BLOCKED = set(sys.argv[1].split(","))
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Missing())
from erpq.cli import main
# Commands separated by ";" run one after the other in this process; the first failure ends it.
commands, argv = [], []
for arg in sys.argv[2:] + [";"]:
    if arg == ";":
        commands.append(argv)
        argv = []
    else:
        argv.append(arg)
for argv in commands:
    if argv == ["console-import"]:
        import tui.app  # noqa: F401  (the console and every capability panel)
        continue
    code = main(argv)
    if code:
        sys.exit(code)
"""


def erpq_without(modules, cwd: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ERPQ_")}
    return subprocess.run([sys.executable, "-c", WITHOUT, ",".join(modules), *argv], cwd=cwd,
                          env={**clean, **env}, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("setting, url, extra", [
    ("database.url", "postgresql+psycopg://erpq:pw@127.0.0.1:1/erpq", "postgres"),
    ("database.url", "mysql+pymysql://erpq:pw@127.0.0.1:1/erpq", "mysql"),
    ("queue.url", "redis://127.0.0.1:1/0", "redis"),
])
def test_a_missing_driver_is_one_line_naming_the_extra(tmp_path, setting, url, extra):
    section, _ = setting.split(".")
    other = "database" if section == "queue" else "queue"
    other_url = "sqlite:///db.sqlite" if other == "database" else "sqlite:///q.db"
    (tmp_path / "config.toml").write_text(f'[{section}]\nurl = "{url}"\n[{other}]\nurl = "{other_url}"\n'
                                          '[log]\npath = "erpq.log"\n')
    proc = erpq_without(DRIVERS, tmp_path, "queue", "list")
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"erpq: error: {setting} needs the ") and err.endswith(f"pip install 'erpq[{extra}]'")
    assert "pw" not in err
    proc = erpq_without(DRIVERS, tmp_path, "db", "upgrade")  # the command that creates the schema too
    if section == "database":
        assert proc.returncode == 2 and f"pip install 'erpq[{extra}]'" in proc.stderr


def test_the_sqlite_default_needs_no_driver(tmp_path):
    """README's first start on a machine with none of the optional drivers."""
    argv = ["db", "upgrade", ";", "queue", "dispatch", "erp:check-system-health", ";", "queue", "work", "--burst",
            ";", "schedule", "list", ";", "queue", "list", ";", "alerts", ";", "metrics", ";", "console-import"]
    proc = erpq_without(DRIVERS, tmp_path, *argv)
    assert proc.returncode == 0, proc.stderr
    assert "Processed 2 job(s), 0 failed" in proc.stdout  # the health check and the probe it queues
    assert (tmp_path / "var" / "erpq.db").exists()


def test_metadata_license_and_extras():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert project["authors"] == [{"name": "erpq developers"}]
    assert "urls" not in project  # no address is real yet
    deps = " ".join(project["dependencies"])
    for driver in ("psycopg", "pymysql", "redis"):
        assert driver not in deps  # the default install is SQLite only
    extras = project["optional-dependencies"]
    assert extras["postgres"][0].startswith("psycopg[binary]") and extras["mysql"][0].startswith("pymysql")
    assert extras["redis"][0].startswith("redis")
    assert "erpq[postgres,mysql,redis]" in extras["test"]  # the tests use every server


def test_container_files_install_the_extras_their_urls_need():
    docker = (ROOT / "deploy" / "Dockerfile").read_text()
    compose = (ROOT / "deploy" / "compose.yaml").read_text()
    installed = set(re.search(r"pip install '\.\[([a-z,]+)\]'", docker).group(1).split(","))
    schemes = {"redis": "redis", "postgresql": "postgres", "mysql": "mysql"}
    needed = {extra for scheme, extra in schemes.items() if re.search(rf"URL: {scheme}[+:]", compose)}
    assert needed == {"redis", "postgres"} and needed <= installed
    assert "LICENSE" in docker.split("RUN pip install")[0]  # the build needs it (license-files)
    assert "ERPQ_LOG__OUTPUT=stderr" in docker  # docker logs, not a file in the container
