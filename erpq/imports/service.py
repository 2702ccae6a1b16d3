"""Importing leads, contacts and deals from CSV or Excel files.

``create_import`` records an import (``import_results``, status pending);
``run_import`` streams the file, validates each row, and writes good rows in
chunks. Each chunk is one transaction holding the new rows, their events (one batched
outbox insert with ``events.emit_many``; the runners' sweep fans them out, so
a 100,000-row import does not wait on 100,000 fan-outs) and
the import's counters, so the counters are never half-counted and an import
interrupted anywhere resumes after its last committed chunk
(``processed_rows``). ``ImportDataJob`` is the queued form.

The business tables (leads, contacts, deals, users) belong to other
capabilities: they are reached through Core table objects naming only the
columns used here, so this module does not depend on where their classes live.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .. import events
from ..db import UTCDateTime, utcnow
from ..models import JobBatch
from ..runtime import current
from .capability import CAPABILITY
from .models import ImportResult
from .reader import ImportFileError, Limits, open_table

log = logging.getLogger("erpq.imports")

ENTITIES = ("leads", "contacts", "deals")
LEAD_STATUSES = ("new", "contacted", "qualified", "unqualified", "converted", "lost")
DEAL_STATUSES = ("open", "won", "lost")
EVENT = {"leads": "lead.created", "contacts": "contact.created", "deals": "deal.created"}
JOB = "ImportDataJob"

_money = sa.Numeric(14, 2)
#: A private MetaData: these Table objects name other capabilities' tables, they do not own them.
_meta = sa.MetaData()


def _table(name: str, *cols: sa.Column) -> sa.Table:
    return sa.Table(name, _meta, sa.Column("id", sa.Integer, primary_key=True), *cols)


TABLES = {
    "leads": _table("leads", sa.Column("tenant_id", sa.Integer),
                      sa.Column("name", sa.String), sa.Column("email", sa.String), sa.Column("phone", sa.String),
                      sa.Column("company", sa.String), sa.Column("source", sa.String),
                      sa.Column("status", sa.String), sa.Column("owner_id", sa.Integer),
                      sa.Column("created_at", UTCDateTime())),
    "contacts": _table("contacts", sa.Column("tenant_id", sa.Integer),
                         sa.Column("first_name", sa.String), sa.Column("last_name", sa.String),
                         sa.Column("email", sa.String), sa.Column("phone", sa.String),
                         sa.Column("company", sa.String), sa.Column("owner_id", sa.Integer),
                         sa.Column("created_at", UTCDateTime())),
    "deals": _table("deals", sa.Column("tenant_id", sa.Integer),
                      sa.Column("title", sa.String), sa.Column("amount", _money), sa.Column("currency", sa.String),
                      sa.Column("status", sa.String), sa.Column("stage", sa.String),
                      sa.Column("assigned_to", sa.Integer), sa.Column("created_at", UTCDateTime()),
                      sa.Column("updated_at", UTCDateTime())),
}
USERS = _table("users", sa.Column("tenant_id", sa.Integer),
                 sa.Column("email", sa.String))


@dataclass(frozen=True)
class Field:
    name: str
    kind: str = "text"  # text email money date status owner currency
    required: bool = False
    max_len: int = 255
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    column: str = ""  # the table column, when not ``name``


_OWNER = Field("owner", "owner", aliases=("owneremail", "assignedto", "salesrep", "ownerid", "user"))
_CREATED = Field("created_at", "date", aliases=("created", "createddate", "createdon", "date"))
_EMAIL = ("email", "e-mail", "emailaddress", "mail", "emailaddr")
_PHONE = Field("phone", max_len=64, aliases=("telephone", "tel", "phonenumber", "mobile"))
_COMPANY = Field("company", aliases=("companyname", "organisation", "organization", "account"))

FIELDS: dict[str, tuple[Field, ...]] = {
    "leads": (Field("name", required=True, aliases=("fullname", "leadname", "contactname")),
              Field("email", "email", aliases=_EMAIL), _PHONE, _COMPANY,
              Field("source", max_len=64, aliases=("leadsource", "channel")),
              Field("status", "status", aliases=("leadstatus",), choices=LEAD_STATUSES),
              Field(_OWNER.name, _OWNER.kind, aliases=_OWNER.aliases, column="owner_id"), _CREATED),
    "contacts": (Field("first_name", max_len=128, aliases=("firstname", "first", "givenname", "forename")),
                 Field("last_name", max_len=128, aliases=("lastname", "last", "surname", "familyname")),
                 Field("email", "email", required=True, aliases=_EMAIL), _PHONE, _COMPANY,
                 Field(_OWNER.name, _OWNER.kind, aliases=_OWNER.aliases, column="owner_id"), _CREATED),
    "deals": (Field("title", required=True, aliases=("dealname", "deal", "name")),
              Field("amount", "money", aliases=("value", "dealvalue", "price")),
              Field("currency", "currency", aliases=("cur",)),
              Field("status", "status", aliases=("dealstatus",), choices=DEAL_STATUSES),
              Field("stage", max_len=64, aliases=("dealstage", "pipelinestage")),
              Field(_OWNER.name, _OWNER.kind, aliases=_OWNER.aliases, column="assigned_to"), _CREATED),
}

EMAIL_RE = re.compile(r"^[^@\s,;<>()\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")
DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%Y/%m/%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S",
                "%Y-%m-%d %H:%M")


class ImportError_(ValueError):  # noqa: N801 - "ImportError" is a builtin
    """An import cannot start (bad file, missing columns, ...): one line."""


def norm(header: str) -> str:
    return re.sub(r"[^a-z0-9]", "", header.lower())


def map_header(entity: str, header: list[str], mapping: dict[str, str] | None = None) -> dict[str, int]:
    """field name -> column index; raises ImportError_ listing missing required columns."""
    fields = {f.name: f for f in FIELDS[entity]}
    by_alias: dict[str, str] = {}
    for f in FIELDS[entity]:
        for a in (f.name, *f.aliases):
            by_alias.setdefault(norm(a), f.name)
    explicit = {norm(k): v for k, v in (mapping or {}).items()}
    for target in explicit.values():
        if target not in fields:
            raise ImportError_(f"mapping names unknown {entity} field {target!r} "
                               f"(known: {', '.join(fields)})")
    out: dict[str, int] = {}
    for i, h in enumerate(header):
        key = norm(h)
        name = explicit.get(key) or by_alias.get(key)
        if name and name not in out:
            out[name] = i
    missing = [f.name for f in FIELDS[entity] if f.required and f.name not in out]
    if missing:
        raise ImportError_(f"missing required column(s) for {entity}: {', '.join(missing)} "
                           f"(file columns: {', '.join(h for h in header if h) or 'none'})")
    return out


# ---------------------------------------------------------------- row validation


@dataclass
class Options:
    dry_run: bool = False
    update_existing: bool = False
    mapping: dict[str, str] | None = None
    encoding: str | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> Options:
        d = d or {}
        return cls(bool(d.get("dry_run")), bool(d.get("update_existing")), d.get("mapping"), d.get("encoding"))

    def to_dict(self) -> dict:
        return {"dry_run": self.dry_run, "update_existing": self.update_existing, "mapping": self.mapping,
                "encoding": self.encoding}


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip()


def parse_money(v: Any) -> Decimal:
    if isinstance(v, int | float | Decimal) and not isinstance(v, bool):
        d = Decimal(str(v))
    else:
        s = _text(v).replace("\u00a0", "").replace(" ", "")
        s = re.sub(r"^[€$£]|[€$£]$|(EUR|USD|GBP)$", "", s)
        if re.fullmatch(r"-?\d{1,3}(\.\d{3})+(,\d+)?|-?\d+,\d{1,2}", s):  # 1.234,56 or 12,5
            s = s.replace(".", "").replace(",", ".")
        else:
            s = s.replace(",", "")
        d = Decimal(s)
    if not d.is_finite() or abs(d) >= Decimal("1e12"):
        raise InvalidOperation
    return d.quantize(Decimal("0.01"))


def parse_date(v: Any) -> dt.datetime:
    if isinstance(v, dt.datetime):
        return v if v.tzinfo else v.replace(tzinfo=dt.UTC)
    if isinstance(v, dt.date):
        return dt.datetime(v.year, v.month, v.day, tzinfo=dt.UTC)
    s = _text(v)
    for fmt in DATE_FORMATS:
        try:
            return dt.datetime.strptime(s, fmt).replace(tzinfo=dt.UTC)
        except ValueError:
            continue
    raise ValueError


class RowChecker:
    """Checks rows against the entity's fields; each mapped column gets its
    converter chosen once (not per row and kind)."""

    def __init__(self, entity: str, columns: dict[str, int], header: list[str], owners: dict[str, int]):
        self.entity, self.columns, self.header, self.owners = entity, columns, header, owners
        self.fields = [f for f in FIELDS[entity] if f.name in columns]
        self.required = [f for f in FIELDS[entity] if f.required]
        self.plan = [(f, columns[f.name], header[columns[f.name]], f.column or f.name, f.required,
                      self._converter(f)) for f in self.fields]
        self.width = max((i for _, i, *_ in self.plan), default=-1) + 1

    def check(self, values: list[Any]) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
        """(column values for the table, []) or (None, [(column, reason), ...])."""
        rec: dict[str, Any] = {}
        errors: list[tuple[str, str]] = []
        short = len(values) < self.width
        for f, i, col, key, required, convert in self.plan:
            raw = values[i] if not short or i < len(values) else None
            text = raw.strip() if raw.__class__ is str else _text(raw)
            if not text:
                if required:
                    errors.append((col, "required"))
                continue
            try:
                rec[key] = convert(raw, text)
            except (ValueError, InvalidOperation, ArithmeticError):
                errors.append((col, self._why(f, text)))
        return (None, errors) if errors else (rec, [])

    def _converter(self, f: Field) -> Callable[[Any, str], Any]:
        if f.kind == "text":
            max_len = f.max_len

            def text(raw: Any, t: str) -> str:
                if len(t) > max_len:
                    raise ValueError
                return t
            return text
        if f.kind == "email":
            match = EMAIL_RE.match

            def email(raw: Any, t: str) -> str:
                e = t.lower()
                if len(e) > 255 or not match(e):
                    raise ValueError
                return e
            return email
        if f.kind == "money":
            return lambda raw, t: parse_money(raw)
        if f.kind == "date":
            return lambda raw, t: parse_date(raw)
        if f.kind == "status":
            choices = frozenset(f.choices)

            def status(raw: Any, t: str) -> str:
                v = t.lower()
                if v not in choices:
                    raise ValueError
                return v
            return status
        if f.kind == "currency":
            code = re.compile(r"[A-Z]{3}").fullmatch

            def currency(raw: Any, t: str) -> str:
                c = t.upper()
                if not code(c):
                    raise ValueError
                return c
            return currency
        if f.kind == "owner":
            owners = self.owners

            def owner(raw: Any, t: str) -> int:
                uid = owners.get(t.lower())
                if uid is None:
                    raise ValueError
                return uid
            return owner
        raise ValueError(f"unknown field kind {f.kind!r}")

    @staticmethod
    def _why(f: Field, text: str) -> str:
        shown = text if len(text) <= 40 else text[:39] + "…"
        return {
            "text": f"longer than {f.max_len} characters",
            "email": f"not an email address: {shown!r}",
            "money": f"not an amount: {shown!r}",
            "date": f"not a date (YYYY-MM-DD or DD.MM.YYYY): {shown!r}",
            "status": f"unknown status {shown!r} (known: {', '.join(f.choices)})",
            "currency": f"not a 3-letter currency code: {shown!r}",
            "owner": f"no user {shown!r} in this tenant",
        }[f.kind]


# ---------------------------------------------------------------- running


@dataclass
class Progress:
    import_id: int
    processed: int
    total: int | None
    success: int
    failed: int
    skipped: int


@dataclass
class _State:
    errors: list[dict] = field(default_factory=list)
    skipped: int = 0
    updated: int = 0
    dropped: int = 0  # errors beyond the log's cap

    def log(self, max_errors: int) -> dict:
        return {"errors": self.errors, "skipped": self.skipped, "updated": self.updated,
                "errors_not_logged": self.dropped}


def create_import(s, tenant_id: int, entity: str, path: str | Path, created_by: int | None = None) -> ImportResult:
    if entity not in ENTITIES:
        raise ImportError_(f"unknown import type {entity!r} (known: {', '.join(ENTITIES)})")
    p = Path(path).resolve()
    if not p.is_file():
        raise ImportError_(f"{path}: no such file")
    row = ImportResult(tenant_id=tenant_id, entity=entity, filename=str(p), status="pending",
                       processed_rows=0, success_count=0, failed_count=0, created_by=created_by,
                       batch_id=str(uuid.uuid4()))
    s.add(row)
    s.flush()
    s.add(JobBatch(id=row.batch_id, name=f"import {row.id}: {entity} from {p.name}", kind="import",
                   tenant_id=tenant_id, total=0, pending=0, failed=0, failed_job_ids=[]))
    return row


def forget_import(s, import_id: int) -> None:
    """Delete an import that never started (its job could not be enqueued) and its batch."""
    batch = s.scalar(sa.select(ImportResult.batch_id).where(ImportResult.id == import_id,
                                                            ImportResult.status == "pending"))
    s.execute(sa.delete(ImportResult).where(ImportResult.id == import_id, ImportResult.status == "pending"))
    if batch:
        s.execute(sa.delete(JobBatch).where(JobBatch.id == batch))


def _owners(s, tenant_id: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for uid, email in s.execute(sa.select(USERS.c.id, USERS.c.email).where(USERS.c.tenant_id == tenant_id)):
        out[str(uid)] = uid
        if email:
            out[email.lower()] = uid
    return out


def run_import(rt, import_id: int, options: Options | dict | None = None,
               progress: Callable[[Progress], None] | None = None) -> ImportResult:
    """Run (or resume) import ``import_id``; returns its final row (detached)."""
    opts = options if isinstance(options, Options) else Options.from_dict(options)
    settings = rt.settings.imports
    with rt.session() as s:
        imp = s.get(ImportResult, import_id)
        if imp is None:
            raise ImportError_(f"no import with id {import_id}")
        if imp.status in ("finished", "failed", "cancelled"):
            s.expunge(imp)
            return imp
        tenant_id, entity, path = imp.tenant_id, imp.entity, imp.filename
        done = imp.processed_rows or 0
        state = _State()
        if isinstance(imp.error_log, dict):
            state.errors = list(imp.error_log.get("errors") or [])
            state.skipped = int(imp.error_log.get("skipped") or 0)
            state.updated = int(imp.error_log.get("updated") or 0)
            state.dropped = int(imp.error_log.get("errors_not_logged") or 0)
        owners = _owners(s, tenant_id)
        s.expunge(imp)
    limits = Limits(settings.max_file_bytes, settings.max_zip_entries, settings.max_uncompressed_bytes)
    try:
        table = open_table(path, limits, opts.encoding)
        try:
            columns = map_header(entity, table.header, opts.mapping)
        except ImportError_:
            if table.close:
                table.close()
            raise
    except (ImportFileError, ImportError_) as exc:
        _fail(rt, import_id, str(exc))
        raise ImportError_(str(exc)) from None
    checker = RowChecker(entity, columns, table.header, owners)
    with rt.session() as s:
        s.execute(sa.update(ImportResult).where(ImportResult.id == import_id).values(
            status="running", total_rows=table.total,
            started_at=sa.func.coalesce(ImportResult.started_at, utcnow())))
        if table.total is not None:
            s.execute(sa.update(JobBatch).where(JobBatch.id == imp.batch_id).values(
                total=table.total, pending=max(table.total - done, 0)))
    chunk: list[tuple[int, list[Any]]] = []
    seen = 0
    counts = [imp.success_count or 0, imp.failed_count or 0]
    try:
        for number, values in table.rows:
            seen += 1
            if seen <= done:
                continue
            chunk.append((number, values))
            if len(chunk) >= settings.chunk_rows:
                if not _write_chunk(rt, imp, checker, chunk, opts, state, counts, settings.max_logged_errors):
                    return _final(rt, import_id)
                done += len(chunk)
                chunk = []
                if progress:
                    progress(Progress(import_id, done, _total(table.total, done), counts[0], counts[1],
                                      state.skipped))
        if chunk:
            if not _write_chunk(rt, imp, checker, chunk, opts, state, counts, settings.max_logged_errors):
                return _final(rt, import_id)
            done += len(chunk)
            if progress:
                progress(Progress(import_id, done, done, counts[0], counts[1], state.skipped))
    except ImportFileError as exc:
        _fail(rt, import_id, str(exc))
        raise ImportError_(str(exc)) from None
    finally:
        if table.close:
            table.close()
    with rt.session() as s:
        s.execute(sa.update(ImportResult).where(ImportResult.id == import_id,
                                                ImportResult.status == "running").values(
            status="finished", finished_at=utcnow(), total_rows=done))
        s.execute(sa.update(JobBatch).where(JobBatch.id == imp.batch_id).values(
            total=done, pending=0, finished_at=utcnow()))
    log.info("import %s: %s %s rows, %s ok, %s failed, %s skipped", import_id, done, entity,
             counts[0], counts[1], state.skipped)
    return _final(rt, import_id)


def _total(total: int | None, done: int) -> int | None:
    """The total shown while running: an estimated total never below the rows already read."""
    return None if total is None else max(total, done)


def _final(rt, import_id: int) -> ImportResult:
    with rt.session() as s:
        imp = s.get(ImportResult, import_id)
        s.expunge(imp)
        return imp


def _fail(rt, import_id: int, reason: str) -> None:
    with rt.session() as s:
        imp = s.get(ImportResult, import_id)
        log_ = dict(imp.error_log) if isinstance(imp.error_log, dict) else {"errors": []}
        log_["error"] = reason
        imp.status, imp.finished_at, imp.error_log = "failed", utcnow(), log_
        if imp.batch_id:
            s.execute(sa.update(JobBatch).where(JobBatch.id == imp.batch_id).values(finished_at=utcnow()))


def mark_failed(rt, import_id: int, reason: str) -> None:
    """Give up on an import (its committed counts stay as they are)."""
    _fail(rt, import_id, reason)


def _write_chunk(rt, imp: ImportResult, checker: RowChecker, chunk: list[tuple[int, list[Any]]],
                 opts: Options, state: _State, counts: list[int], max_errors: int) -> bool:
    """Validate, de-duplicate and write one chunk with the import's counters, in
    one transaction. False when the import was cancelled meanwhile (nothing written)."""
    entity, tenant_id = imp.entity, imp.tenant_id
    t = TABLES[entity]
    good: list[tuple[int, dict]] = []
    errors: list[dict] = []
    for number, values in chunk:
        rec, errs = checker.check(values)
        if errs:
            errors.extend({"row": number, "column": c, "reason": r} for c, r in errs)
            counts[1] += 1
        else:
            good.append((number, rec))
    now = utcnow()
    snapshot = (list(state.errors), state.skipped, state.updated, state.dropped, list(counts))
    try:
        with rt.session() as s:
            updated_before = state.updated
            new, updates = _dedupe(s, entity, tenant_id, good, opts, state)
            if new and not opts.dry_run:
                rows = _rows(entity, t, tenant_id, now, new)
                ids = _insert_ids(s, t, rows)
                events.emit_many(EVENT[entity], _payloads(rows, ids, imp.id), tenant_id, session=s)
            if updates and not opts.dry_run:
                for pk, rec in updates:
                    rec = {k: v for k, v in rec.items() if k != "created_at"}
                    if entity == "deals":
                        rec["updated_at"] = now
                    s.execute(sa.update(t).where(t.c.id == pk, t.c.tenant_id == tenant_id).values(**rec))
            counts[0] += len(new) + state.updated - updated_before
            room = max_errors - len(state.errors)
            state.errors.extend(errors[:max(room, 0)])
            state.dropped += max(len(errors) - max(room, 0), 0)
            n = s.execute(sa.update(ImportResult).where(ImportResult.id == imp.id,
                                                        ImportResult.status == "running").values(
                processed_rows=ImportResult.processed_rows + len(chunk),
                total_rows=sa.case((ImportResult.total_rows < ImportResult.processed_rows + len(chunk),
                                    ImportResult.processed_rows + len(chunk)), else_=ImportResult.total_rows),
                success_count=counts[0],
                failed_count=counts[1], error_log=state.log(max_errors))).rowcount
            if not n:
                raise _Cancelled
            s.execute(sa.update(JobBatch).where(JobBatch.id == imp.batch_id).values(
                pending=sa.case((JobBatch.pending > len(chunk), JobBatch.pending - len(chunk)), else_=0),
                failed=counts[1]))
    except _Cancelled:
        state.errors, state.skipped, state.updated, state.dropped, counts[:] = snapshot
        return False
    except BaseException:
        state.errors, state.skipped, state.updated, state.dropped, counts[:] = snapshot
        raise
    return True


#: Row defaults per entity (beyond NULL), applied when the file leaves the column empty.
_DEFAULTS = {"leads": {"status": "new"}, "contacts": {}, "deals": {"status": "open", "currency": "EUR"}}


def _rows(entity: str, t: sa.Table, tenant_id: int, now: dt.datetime, new: list[tuple[int, dict]]) -> list[dict]:
    """The table rows of ``new`` (every column named, so one executemany takes them all)."""
    base = dict.fromkeys(c.name for c in t.columns if c.name != "id")
    base.update(tenant_id=tenant_id, created_at=now, **_DEFAULTS[entity])
    if entity == "deals":
        base["updated_at"] = now
    rows = []
    for _, rec in new:
        r = base.copy()
        r.update(rec)
        rows.append(r)
    return rows


def _payloads(rows: list[dict], ids: list[int], import_id: int) -> list[dict]:
    """Event payloads: the row as JSON-friendly values, its id and the import's."""
    out = []
    for pk, r in zip(ids, rows, strict=True):
        p = r.copy()
        for k, v in r.items():
            if v is not None and v.__class__ is not str and v.__class__ is not int:
                p[k] = str(v) if isinstance(v, Decimal) else v.isoformat() if isinstance(v, dt.datetime) else v
        p["id"], p["import_id"] = pk, import_id
        out.append(p)
    return out


def _insert_ids(s, t: sa.Table, rows: list[dict]) -> list[int]:
    """Insert ``rows`` (executemany) and return their ids in order.

    PostgreSQL: ids drawn from the sequence first, then one plain executemany.
    MariaDB batches ``RETURNING`` with parameter order kept. SQLite
    would fall back to one statement per row for that, so there the rows are
    inserted in one executemany and their ids read back: SQLite has one writer,
    our transaction holds the write lock, and rowids are max+1, so the newest
    ``len(rows)`` ids are ours, in insertion order.
    """
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        # ids drawn from the table's sequence in one query, then a plain executemany:
        # about half the time of the ordered RETURNING form (INSERT .. SELECT .. ORDER BY)
        seq = sa.func.pg_get_serial_sequence(t.name, "id")
        ids = sorted(s.scalars(sa.select(sa.func.nextval(seq)).select_from(sa.func.generate_series(1, len(rows)))))
        for r, pk in zip(rows, ids, strict=True):
            r["id"] = pk
        s.execute(sa.insert(t), rows)
        return ids
    if dialect != "sqlite":
        return list(s.scalars(sa.insert(t).returning(t.c.id, sort_by_parameter_order=True), rows))
    s.execute(sa.insert(t), rows)
    return sorted(s.scalars(sa.select(t.c.id).order_by(t.c.id.desc()).limit(len(rows))))


class _Cancelled(Exception):
    pass


def _dedupe(s, entity: str, tenant_id: int, good: list[tuple[int, dict]], opts: Options,
            state: _State) -> tuple[list[tuple[int, dict]], list[tuple[int, dict]]]:
    """Split valid rows into new rows and (existing id, values) updates; skipped
    duplicates are counted. Duplicates by email: within the chunk, against the
    tenant's rows (which include earlier chunks of this import). Deals have no
    email and are never de-duplicated."""
    if entity == "deals":
        return good, []
    t = TABLES[entity]
    emails = {rec["email"] for _, rec in good if rec.get("email")}
    existing: dict[str, int] = {}
    wanted = sorted(emails)
    for start in range(0, len(wanted), 900):  # one query per 900 emails: under any backend's bind limit
        existing.update((e.lower(), pk) for pk, e in s.execute(
            sa.select(t.c.id, t.c.email).where(t.c.tenant_id == tenant_id,
                                               t.c.email.in_(wanted[start:start + 900]))))
    new: list[tuple[int, dict]] = []
    updates: dict[int, tuple[int, dict]] = {}
    in_chunk: dict[str, int] = {}  # email -> index in new
    for number, rec in good:
        email = rec.get("email")
        if email and email in existing:
            if opts.update_existing:
                pk = existing[email]
                updates[pk] = (pk, {**updates[pk][1], **rec} if pk in updates else rec)
                state.updated += 1
            else:
                state.skipped += 1
        elif email and email in in_chunk:
            if opts.update_existing:
                i = in_chunk[email]
                new[i] = (new[i][0], {**new[i][1], **rec})
                state.updated += 1
            else:
                state.skipped += 1
        else:
            if email:
                in_chunk[email] = len(new)
            new.append((number, rec))
    return new, list(updates.values())


# ---------------------------------------------------------------- the job


@CAPABILITY.job(JOB, retries=2, retry_delay=10)
def import_data_job(import_id: int, options: dict | None = None) -> dict:
    """Run or resume import ``import_id`` (a re-run after a dead runner resumes)."""
    rt = current()
    try:
        imp = run_import(rt, import_id, options)
    except ImportError_ as exc:
        return {"status": "failed", "error": str(exc)}
    except Exception as exc:
        # Counts stay as the last committed chunk left them; a retry would resume,
        # but a failing database or a bug should not loop: record it and stop.
        _fail(rt, import_id, f"{type(exc).__name__}: {exc}"[:500])
        raise
    return {"status": imp.status, "success": imp.success_count, "failed": imp.failed_count}
