from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa

from erpq.cli_support import Group, ops_for, out
from erpq.models import AuditLog
from erpq.ops import OpsSection, Page, audited
from erpq.ops.base import _Record
from erpq.runtime import current

from .capability import CAPABILITY

# The fixture keeps its "greetings" as audit rows, so it needs no table of its own.
ACTION = "greet.sent"


def _write(text: str) -> None:
    rt = current()
    with rt.session() as s:
        s.add(AuditLog(actor="greet", client=None, source="job", action=ACTION, target=None, command=text))


@CAPABILITY.job("GreetJob", retries=1)
def greet_job(name: str) -> None:
    _write(f"{current().settings.greet.greeting}, {name}")


@CAPABILITY.job("GreetBoomJob", retries=0)
def greet_boom(message: str = "boom") -> None:
    """Always fails (the log tests count its traceback)."""
    logging.getLogger("erpq.greet").info("about to fail: %s", message)
    raise RuntimeError(message)


@CAPABILITY.periodic("greet:tick", cron="*/7 * * * *", description="Greet the world")
def greet_tick() -> None:
    _write(f"{current().settings.greet.greeting}, world")


@dataclass
class Greeting(_Record):
    id: int
    text: str


class GreetOps(OpsSection):
    def greetings(self, offset: int = 0, limit: int = 50, search: str | None = None) -> Page:
        q = sa.select(AuditLog).where(AuditLog.action == ACTION)
        if search:
            q = q.where(AuditLog.command.contains(search))
        with self.rt.read_session() as s:
            total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0
            rows = s.scalars(q.order_by(AuditLog.id).offset(offset).limit(limit)).all()
        return Page([Greeting(r.id, r.command) for r in rows], total, offset, limit)

    @audited
    def forget(self, greeting_id: int) -> None:
        self._act("greet.forget", str(greeting_id), f"erpq greet forget {greeting_id}")
        with self.rt.session() as s:
            s.execute(sa.delete(AuditLog).where(AuditLog.id == greeting_id, AuditLog.action == ACTION))


def cmd_list(args, rt) -> int:
    return out(args, ops_for(args, rt).greet.greetings().items, ["id", "text"])


def cmd_forget(args, rt) -> int:
    ops_for(args, rt).greet.forget(args.id)
    print(f"Forgot greeting {args.id}")
    return 0


def register(groups, common) -> None:
    g = Group(groups, common, "greet", "greetings (a test capability)")
    g.cmd("list", cmd_list, "greetings sent", json=True)
    g.cmd("forget", cmd_forget, "forget a greeting").add_argument("id", type=int, help="greeting id")
