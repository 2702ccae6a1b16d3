"""Report definitions and exports: plain functions taking a session or the runtime."""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from pathlib import Path
from typing import Any

from ..db import utcnow
from ..models import Tenant
from . import export, kinds
from .kinds import ReportError
from .models import Report

log = logging.getLogger("erpq.reports")


def create_report(s, tenant_id: int, name: str, kind: str, filters: dict | None = None,
                  columns: list[str] | None = None) -> Report:
    """A new report definition; the kind, filters and columns are checked by building it once."""
    name = (name or "").strip()
    if not name or len(name) > 255:
        raise ReportError("report name: give 1 to 255 characters")
    if filters is not None and not isinstance(filters, dict):
        raise ReportError("report filters: give a JSON object")
    if columns is not None and not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
        raise ReportError("report columns: give a list of column names")
    kinds.build(s, kind, tenant_id, filters, columns)  # raises ReportError naming what is wrong
    row = Report(tenant_id=tenant_id, name=name, report_type=kind, filters=filters or {}, columns=columns or None)
    s.add(row)
    s.flush()
    return row


def get_report(s, report_id: int) -> Report:
    row = s.get(Report, int(report_id))
    if row is None:
        raise ReportError(f"no report with id {report_id}")
    return row


def report_data(s, report: Report) -> kinds.ReportData:
    slug = s.get(Tenant, report.tenant_id).slug
    data = kinds.build(s, report.report_type, report.tenant_id, report.filters, report.columns, tenant=slug)
    data.title = f"{report.name}: {data.title}" if report.name != data.title else data.title
    return data


def output_dir(rt) -> Path:
    return rt.settings.path(rt.settings.reports.output_dir)


def default_path(rt, report: Report, fmt: str, when: dt.datetime | None = None) -> Path:
    when = when or utcnow()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", report.name).strip("-").lower()[:40] or "report"
    return output_dir(rt) / f"report-{report.id}-{slug}-{when.strftime('%Y%m%dT%H%M%S')}.{fmt}"


def export_report(rt, report_id: int, fmt: str, out: str | Path | None = None) -> Path:
    """Build report ``report_id`` and write it as ``fmt``; returns the file's path."""
    if fmt not in export.FORMATS:
        raise ReportError(f"unknown format {fmt!r} (known: {', '.join(export.FORMATS)})")
    cfg = rt.settings.reports
    with rt.read_session() as s:
        report = get_report(s, report_id)
        data = report_data(s, report)
        path = Path(out) if out else default_path(rt, report, fmt)
        # Rows are materialised inside the session (they are aggregates, not raw tables).
        data.rows = list(data.rows)
    export.write(data, fmt, path, bom=cfg.csv_bom, max_rows=cfg.pdf_max_rows, font=cfg.pdf_font or None)
    log.info("report %s exported as %s to %s", report_id, fmt, path)
    return path


def prune_exports(rt, now: float | None = None) -> int:
    """Delete export files older than ``[reports] retention_days``; returns how many."""
    days = rt.settings.reports.retention_days
    folder = output_dir(rt)
    if not days or not folder.is_dir():
        return 0
    limit = (now or time.time()) - days * 86400
    gone = 0
    for p in folder.glob("report-*"):
        try:
            if p.is_file() and p.stat().st_mtime < limit:
                p.unlink()
                gone += 1
        except OSError:
            continue
    return gone


def describe_filters(filters: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((filters or {}).items())) or "none"
