"""The invoicing capability: recurring invoice templates and ``erp:generate-recurring-invoices``."""

from __future__ import annotations

from dataclasses import dataclass

from ..capability import Capability, PanelAction, PanelSpec


@dataclass
class InvoicingSettings:
    """``[invoicing]``: numbering, catch-up and failure limits."""

    #: Invoice number format: ``{year}`` (issue year; numbering restarts each year) and ``{seq}``.
    number_format: str = "INV-{year}-{seq:06d}"
    #: Due periods issued per template in one run; more are reported and the template paused.
    catch_up_limit: int = 31
    #: Pause a template after this many consecutive failed runs.
    pause_after_failures: int = 3
    #: Payment terms of a new template when none are given (days).
    default_payment_terms_days: int = 14
    #: Templates handled per transaction.
    batch_size: int = 200

    def validate(self, err) -> None:
        if "{seq" not in self.number_format:
            raise err("number_format", "must contain {seq} (e.g. INV-{year}-{seq:06d})")
        try:
            self.number_format.format(year=2026, seq=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise err("number_format", f"not a valid format ({exc}); fields: year, seq") from None
        for key in ("catch_up_limit", "pause_after_failures", "batch_size"):
            if getattr(self, key) < 1:
                raise err(key, "must be at least 1")
        if self.default_payment_terms_days < 0:
            raise err("default_payment_terms_days", "must be >= 0")


CAPABILITY = Capability(
    "invoicing",
    title="Invoicing",
    description="Recurring invoice templates issue one numbered invoice per due period",
    modules=("erpq.invoicing.service",),
    settings=InvoicingSettings,
    cli="erpq.invoicing.cli:register",
    ops="erpq.invoicing.ops:InvoicingOps",
    events=("invoice.created",),
    models="erpq.invoicing.models",
    migrations="migrations",
    panels=(
        PanelSpec("recurring", "Recurring invoices", read="templates_page",
                  columns=(("id", "Id", 6), ("tenant", "Tenant", 12), ("name", "Name", 24),
                           ("schedule", "Schedule", 16), ("next_date", "Next period", 11),
                           ("last_invoice", "Last invoice", 16), ("state", "State", 10),
                           ("reason", "Reason", None)),
                  actions=(PanelAction("p", "Pause", "pause", "Pause recurring invoice {id}?"),
                           PanelAction("r", "Resume", "resume", "Resume recurring invoice {id}?")),
                  summary="{summary}"),
        PanelSpec("invoices_today", "Invoices today", read="invoices_today",
                  columns=(("id", "Id", 7), ("tenant", "Tenant", 12), ("number", "Number", 16),
                           ("issue_date", "Issued", 10), ("due_date", "Due", 10), ("total", "Total", 12),
                           ("currency", "Cur", 3), ("template_id", "Template", 8))),
    ),
)
