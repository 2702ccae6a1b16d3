"""Ops section ``imports``: imports with their progress, their error rows, and
the actions (start, cancel)."""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..db import utcnow
from ..models import Tenant
from ..ops import Conflict, Invalid, NotFound, OpsSection, Page, audited
from ..ops.base import _Record
from . import service
from .models import ImportResult


@dataclass
class ImportInfo(_Record):
    id: int
    tenant: str
    entity: str
    file: str
    status: str
    total_rows: int | None
    processed_rows: int
    success_count: int
    failed_count: int
    skipped: int
    updated: int
    rows_per_s: float | None
    eta_s: float | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    batch_id: str | None
    last_error: str | None


@dataclass
class ImportErrorRow(_Record):
    import_id: int
    row: int
    column: str
    reason: str


def _info(imp: ImportResult, slug: str) -> ImportInfo:
    log = imp.error_log if isinstance(imp.error_log, dict) else {}
    rate = eta = None
    if imp.started_at and imp.processed_rows:
        end = imp.finished_at or utcnow()
        secs = max((end - imp.started_at).total_seconds(), 1e-3)
        rate = round(imp.processed_rows / secs, 1)
        if imp.status == "running" and imp.total_rows:
            eta = round(max(imp.total_rows - imp.processed_rows, 0) / rate, 1) if rate else None
    return ImportInfo(imp.id, slug, imp.entity, Path(imp.filename).name, imp.status, imp.total_rows,
                      imp.processed_rows or 0, imp.success_count or 0, imp.failed_count or 0,
                      int(log.get("skipped") or 0), int(log.get("updated") or 0), rate, eta,
                      imp.started_at, imp.finished_at, imp.batch_id, log.get("error"))


class ImportOps(OpsSection):
    """Imports (``ops.imports``)."""

    def imports(self, offset: int = 0, limit: int = 50, search: str | None = None,
                status: str | None = None) -> Page:
        """Imports, newest first; ``search`` matches the file name or the status."""
        q = sa.select(ImportResult, Tenant.slug).join(Tenant, Tenant.id == ImportResult.tenant_id)
        if status:
            q = q.where(ImportResult.status == status)
        if search:
            like = f"%{search}%"
            q = q.where(sa.or_(ImportResult.filename.like(like), ImportResult.status == search,
                               ImportResult.entity == search))
        with self.rt.read_session() as s:
            total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0
            rows = s.execute(q.order_by(ImportResult.id.desc()).offset(offset).limit(limit)).all()
            return Page([_info(i, slug) for i, slug in rows], total, offset, limit)

    def get(self, import_id: int) -> ImportInfo:
        with self._read() as s:
            row = s.execute(sa.select(ImportResult, Tenant.slug).join(Tenant, Tenant.id == ImportResult.tenant_id)
                            .where(ImportResult.id == int(import_id))).first()
            if row is None:
                raise NotFound(f"no import with id {import_id}")
            return _info(*row)

    def errors(self, import_id: int) -> list[ImportErrorRow]:
        """The import's error rows (row number, column, reason), in file order."""
        self.get(import_id)
        with self.rt.read_session() as s:
            log = s.scalar(sa.select(ImportResult.error_log).where(ImportResult.id == int(import_id)))
        items = (log or {}).get("errors", []) if isinstance(log, dict) else []
        return [ImportErrorRow(int(import_id), e["row"], e["column"], e["reason"]) for e in items]

    def error_rows(self, offset: int = 0, limit: int = 50, search: str | None = None) -> Page:
        """Error rows of import ``search`` (an id), or of the newest import with errors."""
        if search and search.strip().isdigit():
            import_id = int(search)
        else:
            with self.rt.read_session() as s:
                import_id = s.scalar(sa.select(sa.func.max(ImportResult.id)).where(ImportResult.failed_count > 0))
            if import_id is None:
                return Page([], 0, offset, limit)
        items = self.errors(import_id)
        return Page(items[offset:offset + limit], len(items), offset, limit)

    def write_errors_csv(self, import_id: int, path: str | Path) -> int:
        """Write the error rows to a CSV file; returns how many."""
        items = self.errors(import_id)
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["row", "column", "reason"])
            for e in items:
                w.writerow([e.row, e.column, e.reason])
        return len(items)

    def summary(self) -> str:
        with self.rt.read_session() as s:
            counts = dict(s.execute(sa.select(ImportResult.status, sa.func.count()).group_by(ImportResult.status)).all())
        return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none"

    # ------------------------------------------------------------ actions
    @audited
    def start(self, tenant: str | int, entity: str, path: str | Path, *, dry_run: bool = False,
              update_existing: bool = False, mapping: dict[str, str] | None = None, encoding: str | None = None,
              queue: bool = False, progress: Any = None) -> ImportInfo:
        """Import a file: now, in this process (``progress`` gets each chunk's counts),
        or queued as ImportDataJob (``queue=True``)."""
        tenant_id = self.ops.tenant_id(tenant)
        cmd = (f"erpq import {shlex.quote(str(path))} --type {entity} --tenant {shlex.quote(str(tenant))}"
               + (" --dry-run" if dry_run else "") + (" --update-existing" if update_existing else ""))
        if entity not in service.ENTITIES:
            raise Invalid(f"unknown import type {entity!r} (known: {', '.join(service.ENTITIES)})")
        try:
            is_file = Path(path).is_file()
        except (OSError, ValueError) as exc:  # a name too long, a NUL byte
            raise Invalid(f"{str(path)[:200]}: cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
        if not is_file:
            raise Invalid(f"{str(path)[:200]}: no such file")
        # Refused before the import row is written (a bad option is not a failed import).
        if encoding is not None:
            try:
                codecs.lookup(encoding)
            except (LookupError, ValueError):
                raise Invalid(f"--encoding: unknown encoding {encoding!r}") from None
        known = {f.name for f in service.FIELDS[entity]}
        for column, field_name in (mapping or {}).items():
            if not isinstance(column, str) or field_name not in known:
                raise Invalid(f"--mapping: mapping names unknown {entity} field {field_name!r} "
                              f"(known: {', '.join(sorted(known))})")
        self._act("import.start", str(path), cmd)
        opts = service.Options(dry_run, update_existing, mapping, encoding)
        rt = self.rt
        with self._tx() as s:
            imp = service.create_import(s, tenant_id, entity, path)
            import_id, batch_id = imp.id, imp.batch_id
        if queue:
            def undo() -> None:  # never enqueued: the import did not start
                with rt.session() as s2:
                    service.forget_import(s2, import_id)

            self._after_commit(lambda: rt.enqueue(service.JOB, import_id, opts.to_dict(), tenant_id=tenant_id,
                                                  batch_id=batch_id), undo)
        else:
            def run() -> None:  # chunk by chunk, each committed: once the import row and audit row are
                try:
                    service.run_import(rt, import_id, opts, progress)
                except service.ImportError_ as exc:
                    raise Invalid(str(exc)) from None

            self._after_commit(run, keep_audit=True)  # a failed run is recorded on its import row
        return self._then(lambda: self.get(import_id))

    @audited
    def cancel(self, import_id: int) -> ImportInfo:
        """Stop a pending or running import after its current chunk (rows already written stay)."""
        self.get(import_id)
        self._act("import.cancel", str(import_id), f"erpq import cancel {import_id}")
        with self._tx() as s:
            n = s.execute(sa.update(ImportResult).where(ImportResult.id == int(import_id),
                                                        ImportResult.status.in_(("pending", "running")))
                          .values(status="cancelled", finished_at=utcnow())).rowcount
            batch = s.scalar(sa.select(ImportResult.batch_id).where(ImportResult.id == int(import_id)))
            if n and batch:
                from ..models import JobBatch

                s.execute(sa.update(JobBatch).where(JobBatch.id == batch).values(cancelled_at=utcnow()))
        if not n:
            raise Conflict(f"import {import_id} is not pending or running")
        return self.get(import_id)
