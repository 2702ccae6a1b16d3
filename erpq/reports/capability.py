"""The reports capability: report definitions, exports (PDF / Excel / CSV),
schedules (``erp:generate-scheduled-reports``) and ``ExportReportJob``."""

from __future__ import annotations

from dataclasses import dataclass

from ..capability import Capability, PanelAction, PanelSpec


@dataclass
class ReportSettings:
    """``[reports]``: where export files go and how long they are kept."""

    output_dir: str = "var/reports"
    #: Export files older than this are deleted by erp:generate-scheduled-reports.
    retention_days: int = 30
    #: Write a UTF-8 BOM at the start of CSV files (Excel then detects UTF-8).
    csv_bom: bool = True
    #: A PDF lists at most this many rows (and says so); xlsx and csv have them all.
    pdf_max_rows: int = 5000
    #: A TrueType font for PDFs ("" = DejaVu Sans when installed, else Helvetica, Latin-1 only).
    pdf_font: str = ""

    def validate(self, err) -> None:
        if self.retention_days < 0:
            raise err("retention_days", "must be >= 0 (0 keeps files forever)")
        if self.pdf_max_rows <= 0:
            raise err("pdf_max_rows", "must be positive")
        if not self.output_dir:
            raise err("output_dir", "must name a folder")


CAPABILITY = Capability(
    "reports",
    title="Reports",
    description="Reports exported as PDF, Excel or CSV, on demand or on a schedule, emailed to recipients",
    modules=("erpq.reports.service", "erpq.reports.schedules"),
    settings=ReportSettings,
    cli="erpq.reports.cli:register",
    ops="erpq.reports.ops:ReportOps",
    models="erpq.reports.models",
    panels=(
        PanelSpec("report_schedules", "Report schedules", read="schedules",
                  columns=(("id", "Id", 5), ("tenant", "Tenant", 10), ("report", "Report", 20),
                           ("cron_expression", "Cron", 14), ("timezone", "Zone", 14), ("format", "Fmt", 4),
                           ("is_active", "On", 3), ("next_run_at", "Next run", 19), ("last_run_at", "Last run", 19),
                           ("last_status", "Status", 7), ("last_error", "Error", None)),
                  actions=(PanelAction("n", "Run now", "run_schedule_now", "Run schedule {id} now?"),
                           PanelAction("p", "Pause", "pause_schedule", "Pause schedule {id}?"),
                           PanelAction("u", "Resume", "resume_schedule", None)),
                  summary="schedules: {summary}"),
    ),
)
