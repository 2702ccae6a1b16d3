"""The schema is owned by the migrations: upgrade creates every model table on each
database, is idempotent, matches the models, and a stale server database is refused."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from conftest import make_settings
from erpq import models  # noqa: F401  (registers every table)
from erpq.db import Base, current_revision, head_revision, make_engine, upgrade
from erpq.runtime import Runtime, SchemaOutOfDate


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'erpq.db'}"
    return request.getfixturevalue({"postgresql": "pg_url", "mariadb": "mariadb_url"}[request.param])


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def _diffs(engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)


def test_upgrade_creates_every_table_and_is_idempotent(engine):
    assert current_revision(engine) is None
    upgrade(engine)
    tables = set(sa.inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables
    assert current_revision(engine) == head_revision()

    upgrade(engine)  # a second run changes nothing and does not fail
    assert set(sa.inspect(engine).get_table_names()) == tables
    assert current_revision(engine) == head_revision()


def test_upgraded_schema_accepts_rows(engine):
    """A smoke check that types work on the backend: aware datetimes, JSON, long binary."""
    from erpq.db import make_sessionmaker, session_scope, utcnow
    from erpq.models import FailedJob, Tenant

    upgrade(engine)
    Session = make_sessionmaker(engine)
    now = utcnow()
    with session_scope(Session) as s:
        s.add(Tenant(slug="acme", name="Acme"))
        s.add(FailedJob(task_id="t1", task_name="X", args={"args": [1], "kwargs": {"a": "é"}},
                        payload=b"\x00" * 100_000, exception_type="E", exception="e", attempts=1,
                        failed_at=now))
    with session_scope(Session) as s:
        row = s.scalars(sa.select(FailedJob)).one()
        assert row.args == {"args": [1], "kwargs": {"a": "é"}}
        assert len(row.payload) == 100_000
        assert row.failed_at == now  # microseconds and UTC survive the round trip
        assert s.scalars(sa.select(Tenant.slug)).all() == ["acme"]


@pytest.mark.parametrize("url_fixture", ["sqlite", "pg_url", "mariadb_url"])
def test_models_match_migrations(request, tmp_path, url_fixture):
    url = f"sqlite:///{tmp_path / 'erpq.db'}" if url_fixture == "sqlite" else request.getfixturevalue(url_fixture)
    engine = make_engine(url)
    try:
        upgrade(engine)
        assert _diffs(engine) == []
    finally:
        engine.dispose()


def test_runtime_refuses_a_server_database_not_upgraded(tmp_path, pg_url):
    settings = make_settings(tmp_path, database={"url": pg_url})
    with pytest.raises(SchemaOutOfDate) as info:
        Runtime(settings)
    msg = str(info.value)
    assert "erpq db upgrade" in msg and head_revision() in msg
    assert "\n" not in msg
    engine = make_engine(pg_url)
    try:
        assert sa.inspect(engine).get_table_names() == []  # the runtime did not create anything
        upgrade(engine)
    finally:
        engine.dispose()
    rt = Runtime(settings)  # once upgraded, it starts
    try:
        assert current_revision(rt.engine) == head_revision()
    finally:
        rt.close()


def test_runtime_redacts_the_password_in_the_schema_message(tmp_path, pg_url):
    url = pg_url.replace("postgres@", "postgres:s3cret@")  # trust auth: the password is ignored
    with pytest.raises(SchemaOutOfDate) as info:
        Runtime(make_settings(tmp_path, database={"url": url}))
    assert "s3cret" not in str(info.value)


def test_runtime_upgrades_a_sqlite_database_itself(tmp_path):
    settings = make_settings(tmp_path)
    rt = Runtime(settings)
    try:
        assert current_revision(rt.engine) == head_revision()
        assert set(Base.metadata.tables) <= set(sa.inspect(rt.engine).get_table_names())
    finally:
        rt.close()


def test_runtime_without_sqlite_upgrade_refuses(tmp_path):
    with pytest.raises(SchemaOutOfDate, match="erpq db upgrade"):
        Runtime(make_settings(tmp_path), upgrade_sqlite=False)


def test_0003_hands_legacy_delivering_rows_back_to_the_retry_task(engine):
    """A delivery an earlier version left 'delivering' (its attempt counted up front)
    becomes 'failed' and due, with that attempt given back; runners lose jobs_done."""
    upgrade(engine, "0002")
    now = sa.func.now()
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (slug, name, is_active, created_at) "
                             "VALUES ('acme', 'Acme', :t, :now)"), {"t": True, "now": "2026-11-29 12:00:00"})
        conn.execute(sa.text("INSERT INTO erp_webhooks (tenant_id, url, secret, events, is_active, "
                             "consecutive_failures, created_at) VALUES (1, 'https://example.com/h', 'whsec_x', "
                             "'[]', :t, 0, '2026-11-29 12:00:00')"), {"t": True})
        conn.execute(sa.text("INSERT INTO erp_webhook_deliveries (tenant_id, webhook_id, delivery_id, event, "
                             "payload, status, attempts, created_at, updated_at) VALUES (1, 1, 'msg_legacy', "
                             "'deal.created', '{}', 'delivering', 2, '2026-11-29 12:00:00', "
                             "'2026-11-29 12:00:00')"))
    del now
    upgrade(engine)
    with engine.connect() as conn:
        status, attempts, due = conn.execute(sa.text(
            "SELECT status, attempts, next_retry_at FROM erp_webhook_deliveries")).one()
    assert (status, attempts) == ("failed", 1) and due is not None
    assert "jobs_done" not in {c["name"] for c in sa.inspect(engine).get_columns("runners")}
    assert current_revision(engine) == head_revision()
