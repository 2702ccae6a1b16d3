"""Engine, sessions, column types and migrations.

Times are stored as naive UTC in every database and come back as aware UTC
datetimes (``UTCDateTime``), so code never compares naive and aware values.
The schema is owned by Alembic (``erpq/migrations``); ``upgrade()`` brings a
database to the newest revision and is what ``erpq db upgrade`` runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

UTC = dt.UTC


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


def db_now(session: Session) -> dt.datetime:
    """The database's clock (aware UTC): one clock for every runner on a server
    database, so a runner whose wall clock is stepped can neither steal a lock
    lease, let its own lapse, look dead, nor fire a periodic tick early. SQLite
    is on this host: its clock is this process's (no query)."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        value = session.scalar(sa.text("SELECT CURRENT_TIMESTAMP"))
    elif name in ("mysql", "mariadb"):
        value = session.scalar(sa.text("SELECT UTC_TIMESTAMP(6)"))
    else:
        return utcnow()
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class UTCDateTime(sa.types.TypeDecorator):
    """Aware UTC datetimes in Python, naive UTC (microseconds kept) in the database."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: erpq stores aware UTC datetimes")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):  # SQLite via raw SQL
            value = dt.datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)


#: Text that may be long (tracebacks, error logs, payloads): LONGTEXT on MySQL.
LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
#: Binary that may be long (serialized task messages).
LongBinary = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
#: JSON documents (MariaDB stores them as checked LONGTEXT).
JSONType = sa.JSON()


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime()}


def _sqlite_pragmas(busy_timeout_s: float):
    def pragmas(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return pragmas


class DatabaseUnusable(Exception):
    """The database URL cannot be used (driver missing, folder not creatable); one line."""


#: The optional extra that installs each driver: ``pip install 'erpq[postgres]'``.
DRIVER_EXTRAS = {"psycopg": ("postgres", "PostgreSQL"), "psycopg2": ("postgres", "PostgreSQL"),
                 "pymysql": ("mysql", "MySQL/MariaDB"), "MySQLdb": ("mysql", "MySQL/MariaDB"),
                 "redis": ("redis", "Redis")}


def driver_missing(module: str, setting: str) -> DatabaseUnusable:
    """The one-line error for a driver that is not installed, naming the extra to install."""
    extra, what = DRIVER_EXTRAS.get(module.split(".")[0], (None, module))
    if extra is None:
        return DatabaseUnusable(f"{setting}: the driver {module!r} is not installed (pip install it)")
    return DatabaseUnusable(f"{setting} needs the {what} driver {module.split('.')[0]}, which is not "
                            f"installed: pip install 'erpq[{extra}]'")


def require_redis(setting: str = "queue.url") -> None:
    """Refuse a Redis URL when the redis driver is not installed (one line naming the extra)."""
    try:
        import redis  # noqa: F401
    except ImportError:
        raise driver_missing("redis", setting) from None


def make_engine(url: str, echo: bool = False, busy_timeout_s: float = 30.0) -> Engine:
    """An engine with the settings erpq relies on for each backend (``busy_timeout_s``:
    how long a SQLite write waits for another connection's lock before failing)."""
    kwargs: dict = {"echo": echo, "future": True}
    if url.startswith("sqlite"):
        path = url.split("sqlite:///", 1)[-1]
        if path and path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseUnusable(f"cannot create the folder of the SQLite database {path}: "
                                       f"{exc.strerror or exc}") from None
        kwargs["connect_args"] = {"timeout": busy_timeout_s, "check_same_thread": False}
    else:
        kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20, pool_recycle=3600)
    try:
        engine = sa.create_engine(url, **kwargs)
    except ImportError as exc:
        raise driver_missing(getattr(exc, "name", None) or url.split(":", 1)[0].split("+")[-1],
                             "database.url") from None
    except (sa.exc.NoSuchModuleError, sa.exc.ArgumentError) as exc:
        raise DatabaseUnusable(f"database.url is not usable: {str(exc).splitlines()[0]}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas(busy_timeout_s))
        # pysqlite's own transaction handling defers BEGIN; emit it ourselves so
        # that a write transaction takes the lock up front (no upgrade deadlocks).
        @event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_conn, _record):
            dbapi_conn.isolation_level = None

        # Read-only sessions (``readonly=True``) use a deferred BEGIN so that
        # the console's polling never holds the write lock.
        @event.listens_for(engine, "begin")
        def _begin(conn):
            readonly = conn.get_execution_options().get("erpq_readonly")
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


def make_sessionmaker(engine: Engine, readonly: bool = False) -> sessionmaker[Session]:
    bind = engine.execution_options(erpq_readonly=True) if readonly else engine
    return sessionmaker(bind, expire_on_commit=False)


@contextlib.contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# ---------------------------------------------------------------- migrations

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_upgrade_lock = threading.Lock()


def version_locations() -> list[Path]:
    """The core's revisions plus each capability's own branch."""
    from .capability import load_all

    dirs = [MIGRATIONS_DIR / "versions"]
    for cap in load_all():
        d = cap.migrations_dir()
        if d is not None:
            dirs.append(d)
    return dirs


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("version_locations", " ".join(str(d) for d in version_locations()))
    cfg.set_main_option("path_separator", "space")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "heads") -> None:
    """Create or upgrade the schema to ``revision`` (default: every branch's head; idempotent)."""
    from alembic import command

    with _upgrade_lock, engine.begin() as conn:
        cfg = alembic_config(engine.url.render_as_string(hide_password=False))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    """The database's revision(s), "+"-joined when several branches; None when empty."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
    return "+".join(sorted(heads)) or None


def head_revision() -> str:
    """The newest revision of every branch, "+"-joined (core first when sorted)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    heads = set(script.get_heads())
    # a head another branch depends on (a capability's ``depends_on = "0002"``) is not
    # kept in alembic_version once the dependent revision is applied
    for rev in script.walk_revisions():
        for ref in (rev.down_revision, rev.dependencies):
            heads -= {ref} if isinstance(ref, str) else set(ref or ())
    return "+".join(sorted(heads))


class seconds_between(sa.sql.functions.FunctionElement):  # noqa: N801 (an SQL function)
    """``seconds_between(a, b)``: seconds from datetime column ``a`` to ``b`` as a
    float, computed by the database (for aggregating durations in SQL)."""

    type = sa.Float()
    inherit_cache = True
    name = "seconds_between"


@compiles(seconds_between)
def _seconds_between_default(element, compiler, **kw):
    raise sa.exc.CompileError(f"seconds_between is not defined for {compiler.dialect.name}")


@compiles(seconds_between, "sqlite")
def _seconds_between_sqlite(element, compiler, **kw):
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"((julianday({b}) - julianday({a})) * 86400.0)"


@compiles(seconds_between, "postgresql")
def _seconds_between_pg(element, compiler, **kw):
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"EXTRACT(EPOCH FROM ({b} - {a}))"


@compiles(seconds_between, "mysql")
@compiles(seconds_between, "mariadb")
def _seconds_between_mysql(element, compiler, **kw):
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"(TIMESTAMPDIFF(MICROSECOND, {a}, {b}) / 1000000.0)"
