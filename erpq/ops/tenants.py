"""Ops section: tenants and users."""

from __future__ import annotations

import datetime as dt
import re
import shlex
import time
from dataclasses import dataclass

import sqlalchemy as sa

from ..models import Tenant, User
from .base import Conflict, NotFound, OpsCore, OpsError, _audited, _Record, check_columns

# ====================================================================== records



@dataclass
class TenantInfo(_Record):
    id: int
    slug: str
    name: str
    is_active: bool
    created_at: dt.datetime


@dataclass
class UserInfo(_Record):
    id: int
    tenant_id: int
    tenant: str
    name: str
    email: str | None
    is_active: bool


#: How long ``tenant_names`` keeps what it read (a renamed or new tenant shows after this).
TENANT_NAMES_TTL_S = 30.0


class TenantOps(OpsCore):
    # ------------------------------------------------------------ tenants and users
    def tenant_names(self) -> dict[int, str]:
        """Every tenant's id -> name (read at most every ``TENANT_NAMES_TTL_S``)."""
        cached = getattr(self, "_tenant_names", None)
        if cached is not None and time.monotonic() - cached[0] < TENANT_NAMES_TTL_S:
            return cached[1]
        with self.rt.read_session() as s:
            names = {tid: name or slug for tid, slug, name in s.execute(sa.select(Tenant.id, Tenant.slug, Tenant.name))}
        self._tenant_names = (time.monotonic(), names)
        return names

    def tenants(self) -> list[TenantInfo]:
        with self.rt.read_session() as s:
            return [TenantInfo(t.id, t.slug, t.name, t.is_active, t.created_at)
                    for t in s.scalars(sa.select(Tenant).order_by(Tenant.slug))]

    @_audited
    def add_tenant(self, slug: str, name: str | None = None) -> TenantInfo:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", slug or ""):
            raise OpsError(f"tenant slug {slug!r} is invalid: use lowercase letters, digits and '-' (max 64)")
        check_columns(Tenant, "tenant", name=name)
        self.check_writable("tenant.add")
        with self._tx() as s:
            if s.scalar(sa.select(Tenant.id).where(Tenant.slug == slug)) is not None:
                raise Conflict(f"tenant {slug!r} already exists")
            t = Tenant(slug=slug, name=name or slug)
            s.add(t)
            s.flush()
            info = TenantInfo(t.id, t.slug, t.name, t.is_active, t.created_at)
        self._act("tenant.add", slug, f"erpq tenant add {shlex.quote(slug)}")
        return info

    def tenant_id(self, ref: str | int) -> int:
        """A tenant id from a slug or an id."""
        with self.rt.read_session() as s:
            q = sa.select(Tenant.id)
            ref_text = str(ref)
            if ref_text.isdigit() and int(ref_text) > 2**31 - 1:  # no id that large, on any backend
                raise NotFound(f"no tenant {ref!r} (see 'erpq tenant list')")
            q = q.where(Tenant.id == int(ref_text)) if ref_text.isdigit() else q.where(Tenant.slug == ref_text)
            tid = s.scalar(q)
        if tid is None:
            raise NotFound(f"no tenant {ref!r} (see 'erpq tenant list')")
        return tid

    def users(self, tenant: str | None = None) -> list[UserInfo]:
        q = sa.select(User, Tenant.slug).join(Tenant, Tenant.id == User.tenant_id).order_by(Tenant.slug, User.name)
        if tenant:
            q = q.where(User.tenant_id == self.tenant_id(tenant))
        with self.rt.read_session() as s:
            return [UserInfo(u.id, u.tenant_id, slug, u.name, u.email, u.is_active) for u, slug in s.execute(q)]

    @_audited
    def add_user(self, tenant: str, name: str, email: str | None = None) -> UserInfo:
        tid = self.tenant_id(tenant)
        if not name.strip():
            raise OpsError("user name must not be empty")
        if email and not re.fullmatch(r"[^@\s]+@[^@\s]+", email):
            raise OpsError(f"email {email!r} is not an address")
        check_columns(User, "user", name=name.strip(), email=email)
        self.check_writable("user.add")
        with self._tx() as s:
            if email and s.scalar(sa.select(User.id).where(User.tenant_id == tid, User.email == email)):
                raise Conflict(f"tenant {tenant!r} already has a user with email {email!r}")
            u = User(tenant_id=tid, name=name.strip(), email=email)
            s.add(u)
            s.flush()
            slug = s.scalar(sa.select(Tenant.slug).where(Tenant.id == tid))
            info = UserInfo(u.id, tid, slug, u.name, u.email, u.is_active)
        self._act("user.add", f"{tenant}/{name}", f"erpq user add --tenant {shlex.quote(str(tenant))} "
                  f"{shlex.quote(name)}" + (f" --email {shlex.quote(email)}" if email else ""))
        return info
