"""Writing a ReportData as CSV, Excel or PDF.

- CSV: UTF-8 (optional BOM so Excel detects it), RFC 4180 quoting, CRLF.
- Excel: openpyxl write-only (rows streamed), typed cells with number formats
  for money / dates, a bold frozen header, an autofilter, column widths from
  the header and the first rows.
- PDF: fpdf2; title, tenant, generated-at, filters, a table whose header
  repeats on every page, "page N of M", right-aligned numbers, a totals row,
  and a bar chart when the kind has one obvious series.

Text cells beginning with ``= + - @``, tab, CR or LF are neutralised in CSV and
Excel (prefixed with ``'``) so that a spreadsheet never runs them as formulas.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

from .kinds import Col, ReportData

FORMATS = ("pdf", "xlsx", "csv")
MIME = {"pdf": "application/pdf", "csv": "text/csv",
        "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
DANGEROUS = ("=", "+", "-", "@", "\t", "\r", "\n")
_DANGEROUS_SET = frozenset(DANGEROUS)
MONEY_FORMAT = "#,##0.00"
DATE_FORMAT = "yyyy-mm-dd"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm"
DEJAVU = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def neutralise(value: Any) -> Any:
    """A text value that a spreadsheet would treat as a formula, made inert."""
    if isinstance(value, str) and value.startswith(DANGEROUS):
        return "'" + value
    return value


def _text(value: Any, col: Col) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M") if value.tzinfo else value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return f"{value:.2f}" if col.type == "money" else str(value)
    return str(value)


def write(data: ReportData, fmt: str, path: str | Path, **options: Any) -> Path:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        {"csv": write_csv, "xlsx": write_xlsx, "pdf": write_pdf}[fmt](data, tmp, **options)
        os.replace(tmp, path)  # never a half-written file under the final name
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------- CSV


def write_csv(data: ReportData, path: Path, bom: bool = False, **_: Any) -> None:
    cols = data.columns
    texts = [i for i, c in enumerate(cols) if c.type == "text"]
    # Dates, Decimals and ints are written by the csv module as str() gives them
    # (ISO dates, exact decimals); datetimes are formatted; text is neutralised.
    times = [i for i, c in enumerate(cols) if c.type == "datetime"]

    def prepared(rows):
        for row in rows:
            row = list(row)
            for i in texts:
                v = row[i]
                if v.__class__ is str and v[:1] in _DANGEROUS_SET:
                    row[i] = "'" + v
            for i in times:
                row[i] = _text(row[i], cols[i])
            yield row

    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
        w = csv.writer(f, lineterminator="\r\n")
        w.writerow([neutralise(c.label) for c in cols])
        w.writerows(prepared(data.rows))
        if data.totals:
            w.writerow([neutralise(_text(v, c)) for v, c in zip(data.totals, cols, strict=True)])


# ---------------------------------------------------------------- Excel


def write_xlsx(data: ReportData, path: Path, **_: Any) -> None:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    cols = data.columns
    wb = Workbook(write_only=True)
    ws = wb.create_sheet(_sheet_title(data.title))
    rows = iter(data.rows)
    head = list(islice(rows, 200))  # for column widths; the rest is streamed
    for i, c in enumerate(cols, 1):
        sample = [len(_text(r[i - 1], c)) for r in head]
        width = max([len(c.label), *sample, 8 if c.type in ("money", "date") else 4]) + 2
        ws.column_dimensions[get_column_letter(i)].width = min(width, 60)
    ws.freeze_panes = "A2"
    bold = Font(bold=True)
    header = []
    for c in cols:
        cell = WriteOnlyCell(ws, value=neutralise(c.label))
        cell.font = bold
        header.append(cell)
    ws.append(header)
    formats = [MONEY_FORMAT if c.type == "money" else DATE_FORMAT if c.type == "date"
               else DATETIME_FORMAT if c.type == "datetime" else "0.0" if c.type == "percent" else None
               for c in cols]
    styled = [i for i, f in enumerate(formats) if f]
    texts = [i for i, c in enumerate(cols) if c.type == "text"]
    # One StyleArray per formatted column, shared by its cells (the writer only reads it).
    shared = {}
    for i in styled:
        template = WriteOnlyCell(ws)
        template.number_format = formats[i]
        shared[i] = template._style
    n = 1
    for row in _chain(head, rows):
        row = list(row)
        for i in texts:
            v = row[i]
            if v.__class__ is str and v[:1] in _DANGEROUS_SET:
                row[i] = "'" + v
        for i in styled:
            v = row[i]
            if v is not None:
                if v.__class__ is dt.datetime and v.tzinfo:
                    v = v.astimezone(dt.UTC).replace(tzinfo=None)  # Excel has no time zones: UTC
                cell = WriteOnlyCell(ws, value=v)
                cell._style = shared[i]
                row[i] = cell
        ws.append(row)
        n += 1
    if data.totals:
        total = []
        for i, v in enumerate(data.totals):
            cell = WriteOnlyCell(ws, value=neutralise(v) if isinstance(v, str) else v)
            cell.font = bold
            if formats[i] and v is not None:
                cell.number_format = formats[i]
            total.append(cell)
        ws.append(total)
    ws.auto_filter.ref = f"A1:{get_column_letter(len(cols))}{n}"
    wb.save(path)


def _chain(head: list, rest):
    yield from head
    yield from rest


def _sheet_title(title: str) -> str:
    cleaned = "".join(ch for ch in title if ch not in "[]:*?/\\")
    return (cleaned or "Report")[:31]


# ---------------------------------------------------------------- PDF


def write_pdf(data: ReportData, path: Path, max_rows: int = 5000, font: str | None = None, **_: Any) -> None:
    from fpdf import FPDF

    cols = data.columns
    rows = list(islice(iter(data.rows), max_rows + 1))
    cut = len(rows) > max_rows
    rows = rows[:max_rows]

    class Doc(FPDF):
        def footer(self) -> None:
            self.set_y(-12)
            self.set_font(family, size=8)
            self.cell(0, 8, f"page {self.page_no()} of {{nb}}", align="C")

    landscape = len(cols) > 5
    pdf = Doc(orientation="L" if landscape else "P", unit="mm", format="A4")
    pdf.alias_nb_pages()
    font = font if font is not None else (DEJAVU if Path(DEJAVU).exists() else "")
    if font:
        pdf.add_font("Body", "", font)
        bold_path = Path(font).with_name(Path(font).stem + "-Bold.ttf")
        pdf.add_font("Body", "B", str(bold_path) if bold_path.exists() else font)
        family = "Body"
    else:
        family = "Helvetica"

    def clean(text: str) -> str:
        return text if font else text.encode("latin-1", "replace").decode("latin-1")

    pdf.set_auto_page_break(False)
    pdf.add_page()
    pdf.set_font(family, "B", 15)
    pdf.cell(0, 9, clean(data.title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, size=9)
    meta = [f"Tenant: {data.tenant or '-'}",
            f"Generated: {data.generated_at.astimezone(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            "Filters: " + (", ".join(f"{k}={v}" for k, v in sorted(data.filters.items())) or "none")]
    if cut:
        meta.append(f"Showing the first {max_rows:,} rows; export xlsx or csv for all of them.")
    for line in meta:
        pdf.cell(0, 5, clean(line), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)

    if data.chart and rows:
        _bar_chart(pdf, data, rows, family, clean)

    usable = pdf.w - pdf.l_margin - pdf.r_margin
    pdf.set_font(family, size=8)
    natural = []
    for i, c in enumerate(cols):
        sample = [pdf.get_string_width(clean(_text(r[i], c))) for r in rows[:200]]
        natural.append(max([pdf.get_string_width(clean(c.label)) + 2, *sample, 10]) + 3)
    scale = usable / sum(natural)
    widths = [w * scale for w in natural]
    right = [c.type in ("int", "money", "decimal", "percent") for c in cols]
    line_h = 6
    bottom = pdf.h - 16

    def fit(text: str, w: float) -> str:
        text = clean(text)
        if pdf.get_string_width(text) <= w - 2:
            return text
        while text and pdf.get_string_width(text + "…") > w - 2:
            text = text[:-1]
        return text + "…" if font else text

    def header() -> None:
        pdf.set_font(family, "B", 8)
        pdf.set_fill_color(225, 225, 225)
        for c, w, r in zip(cols, widths, right, strict=True):
            pdf.cell(w, line_h, fit(c.label, w), border=1, align="R" if r else "L", fill=True)
        pdf.ln(line_h)
        pdf.set_font(family, size=8)

    def line(values: tuple, bold: bool = False) -> None:
        if pdf.get_y() + line_h > bottom:
            pdf.add_page()
            header()
        if bold:
            pdf.set_font(family, "B", 8)
        for v, c, w, r in zip(values, cols, widths, right, strict=True):
            pdf.cell(w, line_h, fit(_text(v, c), w), border=1, align="R" if r else "L")
        pdf.ln(line_h)
        if bold:
            pdf.set_font(family, size=8)

    if pdf.get_y() + 2 * line_h > bottom:
        pdf.add_page()
    header()
    for row in rows:
        line(row)
    if not rows:
        pdf.cell(0, line_h, "No rows.", new_x="LMARGIN", new_y="NEXT")
    if data.totals:
        line(data.totals, bold=True)
    pdf.output(str(path))


def _bar_chart(pdf, data: ReportData, rows: list, family: str, clean) -> None:
    keys = [c.key for c in data.columns]
    li, vi = keys.index(data.chart[0]), keys.index(data.chart[1])
    series: dict[str, float] = {}
    for r in rows:
        label = _text(r[li], data.columns[li])
        series[label] = series.get(label, 0.0) + float(r[vi] or 0)
    items = list(series.items())[:12]
    peak = max((v for _, v in items), default=0)
    if not items or peak <= 0:
        return
    pdf.set_font(family, "B", 9)
    pdf.cell(0, 6, clean(f"{data.columns[vi].label} by {data.columns[li].label.lower()}"),
             new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, size=7)
    label_w, bar_max, bar_h = 45, pdf.w - pdf.l_margin - pdf.r_margin - 45 - 25, 4.5
    for label, value in items:
        y = pdf.get_y()
        pdf.set_x(pdf.l_margin)
        pdf.cell(label_w, bar_h, clean(label[:30]))
        pdf.set_fill_color(70, 110, 170)
        w = max(bar_max * value / peak, 0.5)
        pdf.rect(pdf.l_margin + label_w, y + 0.5, w, bar_h - 1, style="F")
        pdf.set_xy(pdf.l_margin + label_w + w + 1, y)
        pdf.cell(24, bar_h, f"{value:,.2f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}")
        pdf.ln(bar_h)
    pdf.ln(3)
