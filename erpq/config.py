"""config.toml -> typed, validated settings.

Every problem is reported as one line naming the file, the key and the reason
(``ConfigError``); the CLI turns it into exit code 2. Relative paths resolve
against the directory of the config file (the packaged default resolves them
against the working directory).

Where the config comes from, first match wins: ``--config PATH``, the
``ERPQ_CONFIG`` environment variable, ``./config.toml``, the packaged default.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from croniter import croniter


class ConfigError(Exception):
    """A config problem, already phrased as one line: ``file: key: reason``."""


@dataclass
class QueueSettings:
    #: ``sqlite:///path/to/queue.db`` (default) or ``redis://host:port/db``.
    url: str = "sqlite:///var/queue.db"
    #: Queue name inside the store; two systems can share one Redis by name.
    name: str = "erpq"
    #: Worker threads of a runner (``erpq queue work``, the console's runner).
    workers: int = 4
    #: An idempotency key (``enqueue(..., key=...)``) stays taken this long after its job finished.
    key_ttl_s: int = 3600
    #: Take work round-robin across tenants (``erpq.runtime.fair``); every runner of a queue must agree.
    fair: bool = False
    #: With ``fair``: at most this many jobs of one tenant at once (0: no cap).
    tenant_concurrency: int = 0
    #: With ``fair``: at most N jobs of a job name at once, e.g. ``{SendCampaignJob = 2}``.
    task_concurrency: dict[str, int] = field(default_factory=dict)
    #: Largest JSON arguments (UTF-8 bytes) an operator may dispatch a job with.
    max_args_bytes: int = 65536
    #: A SQLite queue file: how long a write waits for another connection's lock (Huey's default).
    busy_timeout_s: float = 5.0


@dataclass
class DatabaseSettings:
    #: SQLAlchemy URL: sqlite:///var/erpq.db, postgresql+psycopg://..., mysql+pymysql://...
    url: str = "sqlite:///var/erpq.db"
    echo: bool = False
    #: A SQLite database: how long a write waits for another connection's lock before failing.
    busy_timeout_s: float = 30.0


@dataclass
class LogSettings:
    path: str = "var/log/erpq.log"
    level: str = "INFO"
    #: "text" (one line per record) or "json" (one JSON object per line).
    format: str = "text"
    #: "auto" (stderr under systemd or supervisord, else the file), "file" or "stderr".
    output: str = "auto"


@dataclass
class RunnerSettings:
    #: How often a runner writes its heartbeat and looks for dead runners' work.
    heartbeat_s: float = 5.0
    #: A runner silent for this long is dead; its claimed jobs are re-enqueued.
    dead_after_s: float = 30.0
    #: A job recovered from dead runners more often than this is abandoned to failed_jobs.
    max_recoveries: int = 3
    #: How often the scheduler looks for due periodic ticks (Huey's default is 60 s).
    periodic_check_s: int = 5
    #: Seconds a graceful stop waits for running jobs before giving up.
    shutdown_timeout_s: float = 30.0
    #: When not 0, ``erpq queue work`` answers /metrics (Prometheus) and /healthz on this port.
    metrics_port: int = 0
    #: The address the metrics endpoint listens on.
    metrics_host: str = "127.0.0.1"


@dataclass
class ScheduleSettings:
    #: Timezone the cron expressions are read in.
    timezone: str = "UTC"
    #: A tick noticed later than this (downtime) is skipped, not replayed.
    missed_grace_s: int = 120
    #: Lease of a periodic task's overlap lock; renewed while its runner lives.
    lock_lease_s: int = 120
    #: Cron expression per periodic task (croniter syntax); the defaults are what each
    #: capability declares with its task (``erpq.capability.default_schedule()``).
    cron: dict[str, str] = field(default_factory=dict)
    #: Misfire policy per periodic task for ticks missed while no runner fired them:
    #: "skip" (default), "run_once" (one late run) or "catch_up" (each missed tick,
    #: the newest ``catch_up_max`` of them; "catch_up:N" sets N for that task).
    misfire: dict[str, str] = field(default_factory=dict)
    catch_up_max: int = 10


@dataclass
class RetentionSettings:
    history_days: int = 14
    history_rows: int = 1_000_000
    failed_days: int = 30
    health_days: int = 30
    #: Forgotten/flushed failed jobs stay restorable this long.
    undo_minutes: int = 10


@dataclass
class MailSettings:
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    username: str = ""
    password: str = ""
    starttls: bool = False
    from_address: str = "erpq@localhost"


@dataclass
class ConsoleSettings:
    poll_s: float = 2.0
    #: action name -> key, overriding the console's defaults.
    keys: dict[str, str] = field(default_factory=dict)


@dataclass
class CapabilitiesSettings:
    #: Extra capability modules to load (each defines ``CAPABILITY``), beyond the
    #: built-in ones and the ``erpq.capabilities`` entry points.
    extra: list[str] = field(default_factory=list)


@dataclass
class Settings:
    queue: QueueSettings = field(default_factory=QueueSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    log: LogSettings = field(default_factory=LogSettings)
    runner: RunnerSettings = field(default_factory=RunnerSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    mail: MailSettings = field(default_factory=MailSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    capabilities: CapabilitiesSettings = field(default_factory=CapabilitiesSettings)
    #: Each capability's settings section, by section name (also reachable as an
    #: attribute: ``settings.webhooks``).
    sections: dict[str, Any] = field(default_factory=dict)
    #: Where this came from (for messages) and what relative paths resolve against.
    source: str = "<defaults>"
    base_dir: str = "."

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            return sections[name]
        raise AttributeError(f"settings have no section {name!r}")

    def section(self, name: str) -> Any:
        """A capability's settings section (its dataclass instance)."""
        try:
            return self.sections[name]
        except KeyError:
            raise ConfigError(f"{self.source}: [{name}]: no capability declares this section") from None

    def path(self, p: str) -> Path:
        """Resolve a path from the config against the config's directory."""
        path = Path(p)
        return path if path.is_absolute() else Path(self.base_dir) / path

    def sqlite_path(self, url: str) -> Path | None:
        """The file of a ``sqlite:///`` URL, resolved; None for other URLs."""
        if not url.startswith("sqlite:///"):
            return None
        return self.path(url[len("sqlite:///"):])

    @property
    def database_url(self) -> str:
        p = self.sqlite_path(self.database.url)
        return f"sqlite:///{p}" if p is not None else self.database.url


PACKAGED_DEFAULT = Path(__file__).with_name("default_config.toml")


def find_config(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("ERPQ_CONFIG")
    if env:
        return Path(env)
    local = Path("config.toml")
    if local.exists():
        return local
    return PACKAGED_DEFAULT


def uses_packaged_default(settings: Settings) -> bool:
    """Whether no config file was found and the packaged defaults are in force."""
    source = getattr(settings, "file_source", None)
    return source is not None and Path(source).resolve() == PACKAGED_DEFAULT.resolve()


def missing_default_database(settings: Settings) -> Path | None:
    """The SQLite database file that would be created from nothing with the packaged
    defaults (no config file found), or None when a config file is in force, the
    database is not SQLite, or the file exists."""
    if not uses_packaged_default(settings):
        return None
    path = settings.sqlite_path(settings.database.url)
    if path is None or str(path).endswith(":memory:") or path.name == "":
        return None
    path = path.absolute()
    return None if path.exists() else path


def load(path: str | os.PathLike | None = None) -> Settings:
    """Load and validate a config file (see module doc for which one)."""
    p = find_config(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    base = Path.cwd() if p.resolve() == PACKAGED_DEFAULT.resolve() else p.resolve().parent
    from .envconfig import flat_keys, overlay

    file_keys = flat_keys(raw)
    raw, env_used = overlay(raw)  # ERPQ_QUEUE__URL etc. win over the file
    source = str(p) if not env_used else f"{p} + {', '.join(sorted(env_used.values()))}"
    settings = from_dict(raw, source=source, base_dir=str(base))
    settings.file_keys, settings.env_used, settings.file_source = file_keys, env_used, str(p)
    return settings


def from_dict(raw: dict, source: str = "<dict>", base_dir: str = ".") -> Settings:
    """Build validated settings from a parsed TOML mapping.

    The capabilities are loaded first: their settings sections and periodic
    tasks are part of what a valid config may contain.
    """
    from . import capability

    caps = _build(CapabilitiesSettings, raw.get("capabilities", {}), source, "capabilities.")
    try:
        capability.load_all(caps.extra)
    except capability.CapabilityError as exc:
        raise ConfigError(f"{source}: capabilities: {exc}") from None
    sections = capability.settings_sections()
    raw = _flatten_console_keys(raw)
    core = {k: v for k, v in raw.items() if k not in sections}
    settings = _build(Settings, core, source, prefix="", extra_known=set(sections))
    settings.sections = {key: _build(cls, raw.get(key, {}), source, f"{key}.")
                         for key, cls in sections.items()}
    settings.source, settings.base_dir = source, base_dir
    _validate(settings)
    for key, section in settings.sections.items():
        check = getattr(section, "validate", None)
        if check is not None:
            check(lambda k, reason, key=key: ConfigError(f"{source}: {key}.{k}: {reason}"))
    return settings


def _flatten_console_keys(raw: dict) -> dict:
    """``[console.keys]`` written with a bare dotted name (``failed.retry = "y"``) is a
    nested table in TOML: read it as the action name ``"failed.retry"``."""
    console = raw.get("console")
    keys = console.get("keys") if isinstance(console, dict) else None
    if not isinstance(keys, dict) or not any(isinstance(v, dict) for v in keys.values()):
        return raw

    def flat(table: dict, prefix: str) -> dict:
        out = {}
        for k, v in table.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    return {**raw, "console": {**console, "keys": flat(keys, "")}}


def __getattr__(name: str) -> Any:
    if name == "DEFAULT_SCHEDULE":  # kept for callers: now the union of the capabilities' declarations
        from .capability import default_schedule

        return default_schedule()
    raise AttributeError(name)


def _build(cls, raw, source: str, prefix: str, extra_known: set[str] = frozenset()):
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or '<top>'}: expected a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name not in ("source", "base_dir", "sections")}
    known |= extra_known
    for key in raw:
        if key not in known:
            raise ConfigError(
                f"{source}: {prefix}{key}: unknown key (known: {', '.join(sorted(known))})"
            )
    values = {}
    for key, value in raw.items():
        if key in extra_known:
            continue
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _build(hint, value, source, f"{prefix}{key}.")
        else:
            values[key] = _coerce(value, hint, source, f"{prefix}{key}")
    return cls(**values)


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint)


def _coerce(value, hint, source: str, key: str):
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key}: expected a list, got {type(value).__name__}")
        return [_coerce(v, item, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, vt = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key}: expected a table, got {type(value).__name__}")
        return {k: _coerce(v, vt, source, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        raise AssertionError("unions are not used in settings")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(
            f"{source}: {key}: expected {_type_name(hint)}, got {type(value).__name__} {value!r}"
        )
    return value


_CRON_FIELDS = (("minute", 59), ("hour", 23), ("day of month", 31), ("month", 12), ("day of week", 7))


def _bad_cron_step(expr: str) -> str | None:
    """croniter accepts ``*/61`` (and fires hourly); a step beyond the field's range is refused."""
    for part, (field_name, top) in zip(expr.split(), _CRON_FIELDS, strict=False):
        for item in part.split(","):
            if "/" in item:
                step = item.split("/", 1)[1]
                if step.isdigit() and not 1 <= int(step) <= top:
                    return f"step /{step} is out of range for the {field_name} (1-{top})"
    return None


def _validate(s: Settings) -> None:
    src = s.source

    def err(key: str, reason: str) -> ConfigError:
        return ConfigError(f"{src}: {key}: {reason}")

    q = urlsplit(s.queue.url)
    if q.scheme not in ("sqlite", "redis", "rediss", "unix"):
        raise err("queue.url", f"unsupported scheme {q.scheme!r} (use sqlite:///file or redis://host:port/db)")
    if q.scheme == "sqlite" and not s.queue.url.startswith("sqlite:///"):
        raise err("queue.url", "a SQLite queue URL looks like sqlite:///path/to/queue.db")
    if q.scheme.startswith("redis") and not q.hostname:
        raise err("queue.url", "a Redis URL needs a host, e.g. redis://127.0.0.1:6379/0")
    if s.queue.workers < 1 or s.queue.workers > 64:
        raise err("queue.workers", "must be between 1 and 64")
    if not s.queue.name or not s.queue.name.replace("_", "").replace("-", "").isalnum():
        raise err("queue.name", "use letters, digits, '-' and '_' only")

    d = urlsplit(s.database.url)
    base_scheme = d.scheme.split("+")[0]
    if base_scheme not in ("sqlite", "postgresql", "postgres", "mysql", "mariadb"):
        raise err("database.url", f"unsupported database {d.scheme!r} (sqlite, postgresql, mysql)")
    if base_scheme == "sqlite" and not s.database.url.startswith("sqlite:///"):
        raise err("database.url", "a SQLite URL looks like sqlite:///path/to/erpq.db")

    if s.log.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise err("log.level", "must be DEBUG, INFO, WARNING or ERROR")
    if s.log.format not in ("text", "json"):
        raise err("log.format", f"must be text or json (got {s.log.format!r})")
    if s.log.output not in ("auto", "file", "stderr"):
        raise err("log.output", f"must be auto, file or stderr (got {s.log.output!r})")

    for key, value in (("queue.busy_timeout_s", s.queue.busy_timeout_s),
                       ("database.busy_timeout_s", s.database.busy_timeout_s)):
        if not 0 < value <= 3600:
            raise err(key, "must be more than 0 and at most 3600 seconds")
    for key in ("heartbeat_s", "dead_after_s", "shutdown_timeout_s"):
        if getattr(s.runner, key) <= 0:
            raise err(f"runner.{key}", "must be positive")
    if not 0 <= s.runner.metrics_port <= 65535:
        raise err("runner.metrics_port", "must be 0 (off) or a TCP port up to 65535")
    if s.runner.dead_after_s < 2 * s.runner.heartbeat_s:
        raise err("runner.dead_after_s", "must be at least twice runner.heartbeat_s")
    if not 2 <= s.queue.max_args_bytes <= 16 * 1024 * 1024:
        raise err("queue.max_args_bytes", "must be 2 to 16777216")
    if s.runner.max_recoveries < 0:
        raise err("runner.max_recoveries", "must be 0 or more")
    if not 1 <= s.runner.periodic_check_s <= 60 or 60 % s.runner.periodic_check_s:
        raise err("runner.periodic_check_s", "must divide 60 (1, 2, 3, 4, 5, 6, 10, ... 60)")

    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(s.schedule.timezone)
    except Exception:
        raise err("schedule.timezone", f"unknown timezone {s.schedule.timezone!r}") from None
    from .capability import default_schedule

    defaults = default_schedule()
    merged = dict(defaults)
    for name, expr in s.schedule.cron.items():
        if name not in defaults:
            raise err(f"schedule.cron.{name}", f"unknown periodic task (known: {', '.join(defaults)})")
        if not croniter.is_valid(expr) or len(expr.split()) != 5:
            raise err(f"schedule.cron.{name}", f"invalid cron expression {expr!r} (five fields: minute hour day month weekday)")
        bad_step = _bad_cron_step(expr)
        if bad_step:
            raise err(f"schedule.cron.{name}", f"invalid cron expression {expr!r}: {bad_step}")
        merged[name] = expr
    s.schedule.cron = merged
    for name, policy in s.schedule.misfire.items():
        if name not in defaults:
            raise err(f"schedule.misfire.{name}", f"unknown periodic task (known: {', '.join(defaults)})")
        kind, _, n = str(policy).partition(":")
        if kind not in ("skip", "run_once", "catch_up") or (n and (kind != "catch_up" or not n.isdigit()
                                                                     or int(n) < 1)):
            raise err(f"schedule.misfire.{name}", f"unknown policy {policy!r} (skip, run_once, catch_up or catch_up:N)")
    if s.schedule.catch_up_max < 1:
        raise err("schedule.catch_up_max", "must be 1 or more")
    if s.queue.tenant_concurrency < 0:
        raise err("queue.tenant_concurrency", "must be 0 (no cap) or more")
    for name, cap in s.queue.task_concurrency.items():
        if not isinstance(cap, int) or cap < 1:
            raise err(f"queue.task_concurrency.{name}", "must be a whole number, 1 or more")
    if (s.queue.tenant_concurrency or s.queue.task_concurrency) and not s.queue.fair:
        raise err("queue.tenant_concurrency" if s.queue.tenant_concurrency else "queue.task_concurrency",
                  "caps need queue.fair = true")
    if s.queue.key_ttl_s < 0:
        raise err("queue.key_ttl_s", "must be 0 or more")
    if s.schedule.lock_lease_s < 10:
        raise err("schedule.lock_lease_s", "must be at least 10 seconds")

    for key, value in dataclasses.asdict(s.retention).items():
        if value < 0:
            raise err(f"retention.{key}", "must be 0 or more")

    if not 0 < s.mail.smtp_port < 65536:
        raise err("mail.smtp_port", "must be a TCP port (1-65535)")
    if s.console.poll_s < 0.2:
        raise err("console.poll_s", "must be at least 0.2 seconds")
