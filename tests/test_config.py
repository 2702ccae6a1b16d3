"""config.toml -> settings: defaults, the committed config, one-line errors naming
file and key, paths relative to the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from erpq import config
from erpq.config import DEFAULT_SCHEDULE, PACKAGED_DEFAULT, ConfigError, Settings, from_dict, load

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults():
    s = from_dict({})
    assert s.queue.url == "sqlite:///var/queue.db"
    assert s.database.url == "sqlite:///var/erpq.db"
    assert s.schedule.cron == DEFAULT_SCHEDULE
    assert s.schedule.timezone == "UTC"
    assert s.runner.dead_after_s >= 2 * s.runner.heartbeat_s
    assert s == from_dict({}, source=s.source, base_dir=s.base_dir)  # validation changed nothing


def test_empty_file_gives_the_defaults(tmp_path):
    s = load(write(tmp_path, ""))
    assert s.queue == Settings().queue and s.schedule.cron == DEFAULT_SCHEDULE
    assert s.source == str(tmp_path / "config.toml")


def test_packaged_default_loads():
    s = load(PACKAGED_DEFAULT)
    assert s.source == str(PACKAGED_DEFAULT)
    assert set(s.schedule.cron) == set(DEFAULT_SCHEDULE)
    assert s.queue.url.startswith("sqlite:///") and s.database.url.startswith("sqlite:///")
    # the packaged default resolves relative paths against the working directory
    assert Path(s.base_dir) == Path.cwd()


def test_repo_config_loads_and_matches_the_packaged_default():
    s = load(REPO_CONFIG)
    assert s.queue.url.startswith("sqlite:///") and s.database.url.startswith("sqlite:///")
    assert Path(s.base_dir) == REPO_CONFIG.parent
    assert REPO_CONFIG.read_text(encoding="utf-8") == PACKAGED_DEFAULT.read_text(encoding="utf-8")


def test_int_is_accepted_for_a_float(tmp_path):
    s = load(write(tmp_path, "[runner]\nheartbeat_s = 1\ndead_after_s = 3\n"))
    assert s.runner.heartbeat_s == 1.0 and isinstance(s.runner.heartbeat_s, float)


def test_cron_override_merges_with_defaults(tmp_path):
    s = load(write(tmp_path, '[schedule.cron]\n"erp:check-system-health" = "30 3 * * 1-5"\n'))
    assert s.schedule.cron["erp:check-system-health"] == "30 3 * * 1-5"
    assert s.schedule.cron["erp:retry-webhook-deliveries"] == DEFAULT_SCHEDULE["erp:retry-webhook-deliveries"]


BAD = [
    pytest.param('[queue]\nurll = "sqlite:///q.db"\n', "queue.urll", "unknown key", id="unknown-key"),
    pytest.param('[nope]\nx = 1\n', "nope", "unknown key", id="unknown-section"),
    pytest.param('[queue]\nworkers = "four"\n', "queue.workers", "expected int", id="wrong-type"),
    pytest.param('[queue]\nworkers = true\n', "queue.workers", "expected int", id="bool-for-int"),
    pytest.param('queue = 3\n', "queue", "expected a table", id="scalar-for-table"),
    pytest.param('[schedule.cron]\n"erp:check-system-health" = "61 * * * *"\n',
                 "schedule.cron.erp:check-system-health", "invalid cron", id="bad-cron"),
    pytest.param('[schedule.cron]\n"erp:check-system-health" = "0 * * * * *"\n',
                 "schedule.cron.erp:check-system-health", "invalid cron", id="six-field-cron"),
    pytest.param('[schedule.cron]\n"erp:nope" = "* * * * *"\n',
                 "schedule.cron.erp:nope", "unknown periodic task", id="unknown-periodic-task"),
    pytest.param('[schedule]\ntimezone = "Mars/Olympus"\n', "schedule.timezone", "unknown timezone",
                 id="bad-timezone"),
    pytest.param('[queue]\nurl = "http://127.0.0.1/q"\n', "queue.url", "unsupported scheme", id="queue-scheme"),
    pytest.param('[queue]\nurl = "redis:///0"\n', "queue.url", "needs a host", id="queue-redis-no-host"),
    pytest.param('[queue]\nurl = "sqlite://queue.db"\n', "queue.url", "sqlite:///", id="queue-sqlite-form"),
    pytest.param('[database]\nurl = "oracle://db/x"\n', "database.url", "unsupported database",
                 id="database-scheme"),
    pytest.param('[database]\nurl = "sqlite://erpq.db"\n', "database.url", "sqlite:///", id="database-sqlite-form"),
    pytest.param('[runner]\nheartbeat_s = 5.0\ndead_after_s = 6.0\n', "runner.dead_after_s", "twice",
                 id="dead-after-too-short"),
    pytest.param('[runner]\nperiodic_check_s = 7\n', "runner.periodic_check_s", "divide 60", id="periodic-check"),
    pytest.param('[health]\ncpu_warning = 90.0\ncpu_critical = 50.0\n', "health.cpu_critical", "must be >=",
                 id="health-thresholds"),
    pytest.param('[webhooks]\nbackoff_s = [5, "x"]\n', "webhooks.backoff_s[1]", "expected int", id="list-item-type"),
]


@pytest.mark.parametrize(("text", "key", "reason"), BAD)
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, text, key, reason):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: ")
    assert f": {key}: " in msg, msg
    assert reason in msg, msg


def test_file_not_found(tmp_path):
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path)) and "not found" in msg


def test_bad_toml(tmp_path):
    path = write(tmp_path, '[queue\nurl = "x"\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path)) and "TOML" in msg
    assert "line 1" in msg


def test_relative_paths_resolve_against_the_config_directory(tmp_path, monkeypatch):
    conf = write(tmp_path / "etc", '[queue]\nurl = "sqlite:///data/queue.db"\n'
                 '[database]\nurl = "sqlite:///data/erpq.db"\n[log]\npath = "logs/erpq.log"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s = load(conf)
    base = (tmp_path / "etc").resolve()
    assert s.database_url == f"sqlite:///{base / 'data' / 'erpq.db'}"
    assert s.sqlite_path(s.queue.url) == base / "data" / "queue.db"
    assert s.path(s.log.path) == base / "logs" / "erpq.log"


def test_absolute_paths_stay_absolute(tmp_path):
    db = tmp_path / "abs" / "erpq.db"
    s = load(write(tmp_path / "etc", f'[database]\nurl = "sqlite:///{db}"\n'))
    assert s.database_url == f"sqlite:///{db}"


def test_server_urls_are_kept(tmp_path):
    s = load(write(tmp_path, '[queue]\nurl = "redis://127.0.0.1:6379/3"\n'
                   '[database]\nurl = "postgresql+psycopg://u:p@db:5432/erp"\n'))
    assert s.sqlite_path(s.queue.url) is None
    assert s.database_url == "postgresql+psycopg://u:p@db:5432/erp"


def test_find_config_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ERPQ_CONFIG", raising=False)
    assert config.find_config() == PACKAGED_DEFAULT
    write(tmp_path, "")
    assert config.find_config() == Path("config.toml")
    monkeypatch.setenv("ERPQ_CONFIG", str(tmp_path / "env.toml"))
    assert config.find_config() == tmp_path / "env.toml"
    assert config.find_config(tmp_path / "flag.toml") == tmp_path / "flag.toml"
