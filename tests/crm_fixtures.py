"""Helpers for the CRM tests: tenants, users, runtimes on server databases."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import make_settings
from erpq.db import make_engine, upgrade, utcnow
from erpq.models import Tenant, User
from erpq.runtime import Runtime, set_current


def add_tenant(rt: Runtime, slug: str = "acme") -> int:
    with rt.session() as s:
        t = Tenant(slug=slug, name=slug.title())
        s.add(t)
        s.flush()
        return t.id


def add_user(rt: Runtime, tenant_id: int, name: str, email: str | None = None) -> int:
    with rt.session() as s:
        u = User(tenant_id=tenant_id, name=name, email=email)
        s.add(u)
        s.flush()
        return u.id


def rows(rt: Runtime, model, *where) -> list:
    with rt.read_session() as s:
        return list(s.scalars(sa.select(model).where(*where).order_by(model.id if hasattr(model, "id")
                                                                       else sa.text("1"))))


def in_minutes(m: float) -> dt.datetime:
    return utcnow() + dt.timedelta(minutes=m)


def server_runtime(tmp_path: Path, url: str, **sections) -> Runtime:
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    rt = Runtime(make_settings(tmp_path, database={"url": url}, **sections))
    set_current(rt)
    return rt


@pytest.fixture(params=["sqlite", "postgresql"])
def db_runtime(request, tmp_path: Path) -> Iterator[Runtime]:
    """A runtime on the SQLite database, then on PostgreSQL (test_crm)."""
    if request.param == "sqlite":
        rt = Runtime(make_settings(tmp_path))
        set_current(rt)
    else:
        rt = server_runtime(tmp_path, request.getfixturevalue("pg_url"))
    yield rt
    set_current(None)
    rt.close()
