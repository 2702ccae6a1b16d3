"""A capability's console panel, drawn from its ``PanelSpec``: a paged table over
an Ops section read, with the section's actions on keys.

The console does not know any capability: ``panel_view(cap, spec)`` builds a
``View`` class from the declaration, reading ``ops.section(cap).<spec.read>``.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from textual.binding import Binding

from ..fmt import clock
from ..widgets.dialogs import PromptScreen
from .base import View

#: Columns that name a tenant: shown as the tenant's name.
TENANT_COLUMNS = ("tenant", "tenant_id")


class CapabilityPanel(View):
    """Base of generated panels; ``CAPABILITY`` and ``SPEC`` are set per panel."""

    PAGED = True
    CAPABILITY: ClassVar[str] = ""
    SPEC: ClassVar[Any] = None

    def section(self, ops: Any) -> Any:
        return ops.section(self.CAPABILITY)

    def fetch(self, ops: Any) -> Any:
        section = self.section(ops)
        page = getattr(section, self.SPEC.read)(offset=self.page_offset, limit=self.PAGE_SIZE,
                                                search=self.filter_text or None)
        read = getattr(self.SPEC, "summary_read", "summary")
        summary = getattr(section, read)() if self.SPEC.summary and hasattr(section, read) else ""
        return page, summary

    def cell(self, value: Any) -> str:
        if value is None:
            return "—"
        if hasattr(value, "tzinfo") and hasattr(value, "hour"):
            return clock(value, self.console.tz, self.console.now())
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:,.2f}"
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, list | tuple):
            return ", ".join(map(str, value))
        return str(value).replace("\n", " ")

    def field(self, record: Any, name: str) -> Any:
        """A cell of ``record``; a tenant column shows the tenant's name (the id when unknown)."""
        if name in TENANT_COLUMNS and getattr(record, "tenant_id", None) is not None:
            return self.console.tenant(record.tenant_id)
        return self.cell(getattr(record, name, None))

    def row_id(self, record: Any) -> str:
        return str(getattr(record, self.SPEC.row_id))

    def show(self, data: Any) -> None:
        page, summary = data
        self.total = page.total
        fields = [c[0] for c in self.SPEC.columns]
        rows = [(self.row_id(r), [self.field(r, f) for f in fields]) for r in page.items]
        self.table.sync(rows, {self.row_id(r): r for r in page.items})
        head = f"{self.page_text(len(page.items))} {self.SPEC.title.lower()}" if page.total \
            else f"no {self.SPEC.title.lower()}"
        if summary:
            head += " · " + self.SPEC.summary.format(summary=summary)
        self.head(head)
        self.refresh_info()

    def describe(self, record: Any) -> str:
        d = record.to_dict() if hasattr(record, "to_dict") else dict(vars(record))
        if d.get("tenant_id") is not None:
            d = {"tenant": self.console.tenant(d.pop("tenant_id")), **{k: v for k, v in d.items() if k != "tenant"}}
        return " · ".join(f"{k} {v}" for k, v in d.items() if v not in (None, "", []))[:400]

    def detail(self, ops: Any, record: Any) -> tuple[str, str]:
        d = record.to_dict() if hasattr(record, "to_dict") else dict(vars(record))
        if d.get("tenant_id") is not None:
            d["tenant"] = self.console.tenant_long(d["tenant_id"])
        return f"{self.SPEC.title} {self.row_id(record)}", json.dumps(d, indent=2, default=str)

    def act(self, index: int) -> None:
        action = self.SPEC.actions[index]
        record = self.selected()
        if record is None:
            return
        rid = self.row_id(record)
        cap = self.CAPABILITY
        title = f"{action.label.lower()} {rid}"
        done = lambda _: f"{action.label.lower()}: {rid} done"  # noqa: E731
        if not getattr(action, "prompt", None):
            self.console.perform(title, lambda ops: getattr(ops.section(cap), action.method)(_typed(rid)),
                                 confirm=action.confirm.format(id=rid) if action.confirm else None, done=done)
            return

        def answered(text: str | None) -> None:
            if text is None:
                self.console.message(f"{title}: cancelled, nothing done", toast=False)
                return
            self.console.perform(title, lambda ops: getattr(ops.section(cap), action.method)(_typed(rid), text),
                                 done=done)

        if self.console.ops.read_only:  # refused anyway: say so without asking
            answered(action.default)
        else:
            self.console.push_screen(PromptScreen(action.prompt.format(id=rid), action.default), answered)


def _typed(rid: str) -> Any:
    return int(rid) if rid.isdigit() else rid


def panel_view(capability: str, spec: Any) -> type[View]:
    """A ``View`` class for one ``PanelSpec`` of ``capability``."""
    bindings = [Binding("enter", "detail", "Detail", show=False, id=f"{spec.key}.detail")]
    namespace: dict[str, Any] = {}
    for i, action in enumerate(spec.actions):
        name = f"panel_action_{i}"
        namespace[f"action_{name}"] = lambda self, i=i: self.act(i)
        bindings.append(Binding(action.key, name, action.label, id=f"{spec.key}.{action.method}"))
    namespace.update(TITLE=spec.title, KEY=spec.key, CAPABILITY=capability, SPEC=spec,
                     COLUMNS=list(spec.columns), BINDINGS=bindings,
                     __doc__=f"{spec.title} ({capability}): {', '.join(a.label for a in spec.actions) or 'read only'}")
    return type(f"{spec.key.title().replace('_', '')}Panel", (CapabilityPanel,), namespace)
