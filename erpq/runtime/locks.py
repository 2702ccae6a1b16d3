"""Lease locks in the database, shared by every runner on it.

A lock is a row (name, holder, expires_at). Taking it succeeds when there is
no row or the row's lease has expired; the holder's runner renews its leases
with each heartbeat, so a dead holder blocks nobody longer than one lease.

Leases are read and written on the database's clock (``db_now``), never a
runner's own: a runner whose wall clock steps back or forward neither lets its
lease lapse early, stretches it, nor sees another runner's lease as expired.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..db import db_now, session_scope
from ..models import Lock


def acquire(factory: sessionmaker[Session], name: str, holder: str, lease_s: float,
            task_id: str | None = None) -> bool:
    with session_scope(factory) as s:
        now = db_now(s)
        expires = now + dt.timedelta(seconds=lease_s)
        taken = s.execute(
            sa.update(Lock)
            .where(Lock.name == name, sa.or_(Lock.expires_at < now, Lock.holder == holder))
            .values(holder=holder, task_id=task_id, acquired_at=now, expires_at=expires)
        ).rowcount
        if taken:
            return True
    try:
        with session_scope(factory) as s:
            now = db_now(s)
            expires = now + dt.timedelta(seconds=lease_s)
            s.add(Lock(name=name, holder=holder, task_id=task_id, acquired_at=now, expires_at=expires))
        return True
    except IntegrityError:
        return False


def release(factory: sessionmaker[Session], name: str, holder: str | None = None) -> bool:
    with session_scope(factory) as s:
        q = sa.delete(Lock).where(Lock.name == name)
        if holder is not None:
            q = q.where(Lock.holder == holder)
        return bool(s.execute(q).rowcount)


def renew(factory: sessionmaker[Session], holder: str, lease_s: float) -> int:
    with session_scope(factory) as s:
        return s.execute(
            sa.update(Lock)
            .where(Lock.holder == holder)
            .values(expires_at=db_now(s) + dt.timedelta(seconds=lease_s))
        ).rowcount


def release_all(factory: sessionmaker[Session], holder: str) -> int:
    with session_scope(factory) as s:
        return s.execute(sa.delete(Lock).where(Lock.holder == holder)).rowcount


def holder_of(factory: sessionmaker[Session], name: str) -> Lock | None:
    with session_scope(factory) as s:
        lock = s.get(Lock, name)
        return lock if lock is not None and lock.expires_at >= db_now(s) else None
