"""The imports capability: leads, contacts and deals from CSV or Excel files (``ImportDataJob``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..capability import Capability, PanelAction, PanelSpec


@dataclass
class ImportSettings:
    """``[imports]``: chunk size and the limits that refuse hostile files cheaply."""

    #: Rows written per transaction (the counters are committed with each chunk).
    chunk_rows: int = 5000
    max_file_bytes: int = 200 * 1024 * 1024
    #: An .xlsx is a zip: at most this many entries ...
    max_zip_entries: int = 200
    #: ... expanding to at most this many bytes (declared and actually inflated).
    max_uncompressed_bytes: int = 500 * 1024 * 1024
    #: Error rows kept in import_results.error_log (the rest are counted).
    max_logged_errors: int = 10_000

    def validate(self, err) -> None:
        for key in ("chunk_rows", "max_file_bytes", "max_zip_entries", "max_uncompressed_bytes",
                    "max_logged_errors"):
            if getattr(self, key) <= 0:
                raise err(key, "must be positive")


CAPABILITY = Capability(
    "imports",
    title="Imports",
    description="Leads, contacts and deals imported from CSV or Excel files, validated row by row",
    modules=("erpq.imports.service",),
    settings=ImportSettings,
    cli="erpq.imports.cli:register",
    ops="erpq.imports.ops:ImportOps",
    events=("lead.created", "contact.created", "deal.created"),
    models="erpq.imports.models",
    panels=(
        PanelSpec("imports", "Imports", read="imports",
                  columns=(("id", "Id", 6), ("tenant", "Tenant", 10), ("entity", "Type", 8),
                           ("file", "File", 20), ("status", "Status", 9), ("processed_rows", "Rows", 8),
                           ("total_rows", "Total", 8), ("success_count", "Ok", 7), ("failed_count", "Bad", 6),
                           ("rows_per_s", "Rows/s", 7), ("eta_s", "ETA s", 6), ("last_error", "Error", None)),
                  actions=(PanelAction("c", "Cancel", "cancel", "Cancel import {id}?"),),
                  summary="imports: {summary}"),
        PanelSpec("import_errors", "Import errors", read="error_rows",
                  columns=(("import_id", "Import", 7), ("row", "Row", 7), ("column", "Column", 16),
                           ("reason", "Reason", None))),
    ),
)
