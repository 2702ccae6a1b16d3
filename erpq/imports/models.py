"""The imports capability's table: one row per import of a CSV or Excel file."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base, JSONType, utcnow


class ImportResult(Base):
    """An import: its counts are committed with each chunk of rows, so they are
    never half-counted; ``processed_rows`` is where a resumed import continues."""

    __tablename__ = "import_results"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    entity: Mapped[str] = mapped_column(sa.String(32))  # leads contacts deals
    filename: Mapped[str] = mapped_column(sa.String(512))
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")  # pending running finished failed
    total_rows: Mapped[int | None] = mapped_column(sa.Integer)
    processed_rows: Mapped[int] = mapped_column(sa.Integer, default=0)
    success_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    failed_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    error_log: Mapped[Any | None] = mapped_column(JSONType)
    batch_id: Mapped[str | None] = mapped_column(sa.String(36))
    created_by: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
