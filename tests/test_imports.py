"""ImportDataJob and ``erpq import``: CSV in any common shape and encoding, Excel
behind zip-bomb limits, row validation with exact error rows, duplicates,
dry runs, resuming, cancelling, events, and the same on PostgreSQL / MariaDB."""

from __future__ import annotations

import argparse
import csv
import io
import time
import zipfile
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
import sqlalchemy as sa

from conftest import make_settings
from erpq.imports import service
from erpq.imports.cli import register
from erpq.imports.models import ImportResult
from erpq.models import EventOutbox, JobBatch, Tenant, User
from erpq.ops import Actor, Conflict, Invalid, Ops
from erpq.runtime import Runtime, set_current

LEADS = service.TABLES["leads"]
CONTACTS = service.TABLES["contacts"]
DEALS = service.TABLES["deals"]


def add_tenant(rt: Runtime, slug: str = "acme") -> int:
    with rt.session() as s:
        t = Tenant(slug=slug, name=slug.title())
        s.add(t)
        s.flush()
        s.add(User(tenant_id=t.id, name="Olga Owner", email="olga@acme.test"))
        return t.id


@pytest.fixture
def ops(runtime) -> Ops:
    return Ops(runtime, Actor("tester", None, "cli"))


@pytest.fixture
def tenant(runtime) -> int:
    return add_tenant(runtime)


def write(path: Path, text: str, encoding: str = "utf-8", bom: bool = False) -> Path:
    data = text.encode(encoding)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def leads(rt, tenant_id=None) -> list[tuple]:
    with rt.read_session() as s:
        q = sa.select(LEADS.c.name, LEADS.c.email, LEADS.c.company, LEADS.c.status, LEADS.c.owner_id)
        if tenant_id:
            q = q.where(LEADS.c.tenant_id == tenant_id)
        return [tuple(r) for r in s.execute(q.order_by(LEADS.c.id))]


def events_named(rt, name: str) -> list[dict]:
    with rt.read_session() as s:
        return [e.payload for e in s.scalars(sa.select(EventOutbox).where(EventOutbox.name == name)
                                              .order_by(EventOutbox.id))]


CLEAN = "Name,Email,Company,Status,Owner\nAda Lovelace,ada@example.com,Engines,new,olga@acme.test\n" \
        "Alan Turing,alan@example.com,Bletchley,qualified,\n"


def test_clean_csv_imports_every_row_and_emits_events(runtime, ops, tenant, tmp_path):
    info = ops.imports.start("acme", "leads", write(tmp_path / "l.csv", CLEAN))
    assert (info.status, info.total_rows, info.processed_rows, info.success_count, info.failed_count) == \
        ("finished", 2, 2, 2, 0)
    with runtime.read_session() as s:
        olga = s.scalar(sa.select(User.id).where(User.email == "olga@acme.test"))
    assert leads(runtime) == [("Ada Lovelace", "ada@example.com", "Engines", "new", olga),
                              ("Alan Turing", "alan@example.com", "Bletchley", "qualified", None)]
    payloads = events_named(runtime, "lead.created")
    assert [p["email"] for p in payloads] == ["ada@example.com", "alan@example.com"]
    assert all(p["import_id"] == info.id and p["id"] for p in payloads)
    with runtime.read_session() as s:
        batch = s.get(JobBatch, info.batch_id)
        assert (batch.kind, batch.total, batch.pending, batch.finished_at is not None) == ("import", 2, 0, True)
        started = s.get(ImportResult, info.id)
        assert started.started_at <= started.finished_at


@pytest.mark.parametrize("variant", ["bom", "cp1252", "semicolons", "tabs-crlf"])
def test_csv_variants(runtime, ops, tenant, tmp_path, variant):
    text = "Full Name,E-mail,Company\nJosé Müller,jose@example.com,Café “Crème”\nZoë,zoe@example.com,Ünïcode\n"
    if variant == "bom":
        path = write(tmp_path / "x.csv", text, bom=True)
    elif variant == "cp1252":
        path = write(tmp_path / "x.csv", text, encoding="cp1252")
    elif variant == "semicolons":
        path = write(tmp_path / "x.csv", text.replace(",", ";"))
    else:
        path = write(tmp_path / "x.csv", text.replace(",", "\t").replace("\n", "\r\n"))
    info = ops.imports.start("acme", "leads", path)
    assert (info.success_count, info.failed_count) == (2, 0)
    assert [r[:3] for r in leads(runtime)] == [("José Müller", "jose@example.com", "Café “Crème”"),
                                               ("Zoë", "zoe@example.com", "Ünïcode")]


def test_undecodable_file_with_a_declared_encoding_is_refused_clearly(runtime, ops, tenant, tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes("Name,Email\nJosé,j@example.com\n".encode("cp1252") + b"\x81\x8d\n")
    with pytest.raises(Invalid, match=r"x.csv: cannot decode byte 0x81 at offset \d+ \(tried utf-8, cp1252\)"):
        ops.imports.start("acme", "leads", path)
    path.write_bytes(b"Name,Email\nJ\xc3\xa9,j@example.com\n\xff\n")
    with pytest.raises(Invalid, match="unknown encoding 'klingon'"):
        ops.imports.start("acme", "leads", path, encoding="klingon")
    assert leads(runtime) == []


def test_missing_required_columns_are_listed(runtime, ops, tenant, tmp_path):
    with pytest.raises(Invalid, match=r"missing required column\(s\) for deals: title \(file columns: Amount, Stage\)"):
        ops.imports.start("acme", "deals", write(tmp_path / "d.csv", "Amount,Stage\n10,won\n"))
    page = ops.imports.imports()
    assert page.items[0].status == "failed" and "title" in page.items[0].last_error


def test_mixed_rows_record_the_exact_error_rows(runtime, ops, tenant, tmp_path):
    text = ("Name,Email,Status,Owner,Created\n"
            "Good One,good1@example.com,new,,2026-01-31\n"
            ",nobody@example.com,new,,\n"                    # line 3: name required
            "Bad Mail,not-an-email,new,,\n"                  # line 4
            "Bad Status,bs@example.com,sleeping,,\n"         # line 5
            "Bad Owner,bo@example.com,new,ghost@acme.test,31.02.2026\n"  # line 6: owner and date
            "\n"
            "Good Two,good2@example.com,contacted,olga@acme.test,31.01.2026\n")
    info = ops.imports.start("acme", "leads", write(tmp_path / "m.csv", text))
    assert (info.processed_rows, info.success_count, info.failed_count) == (6, 2, 4)
    errors = [(e.row, e.column, e.reason) for e in ops.imports.errors(info.id)]
    assert errors == [
        (3, "Name", "required"),
        (4, "Email", "not an email address: 'not-an-email'"),
        (5, "Status", "unknown status 'sleeping' (known: new, contacted, qualified, unqualified, converted, lost)"),
        (6, "Owner", "no user 'ghost@acme.test' in this tenant"),
        (6, "Created", "not a date (YYYY-MM-DD or DD.MM.YYYY): '31.02.2026'"),
    ]
    assert [r[0] for r in leads(runtime)] == ["Good One", "Good Two"]
    out = tmp_path / "errors.csv"
    assert ops.imports.write_errors_csv(info.id, out) == 5
    assert list(csv.reader(out.open()))[1] == ["3", "Name", "required"]


def test_deals_money_and_statuses(runtime, ops, tenant, tmp_path):
    text = "Deal name;Value;Currency;Status\nBig;1.234,50;eur;won\nSmall;€99;;open\nOdd;ten;EUR;open\n"
    info = ops.imports.start("acme", "deals", write(tmp_path / "d.csv", text))
    assert (info.success_count, info.failed_count) == (2, 1)
    with runtime.read_session() as s:
        rows = s.execute(sa.select(DEALS.c.title, DEALS.c.amount, DEALS.c.currency, DEALS.c.status)
                         .order_by(DEALS.c.id)).all()
    assert [tuple(r) for r in rows] == [("Big", Decimal("1234.50"), "EUR", "won"),
                                        ("Small", Decimal("99.00"), "EUR", "open")]
    assert [p["title"] for p in events_named(runtime, "deal.created")] == ["Big", "Small"]
    assert [(e.row, e.column) for e in ops.imports.errors(info.id)] == [(4, "Value")]


def test_duplicates_are_skipped_or_updated(runtime, ops, tenant, tmp_path):
    runtime.settings.imports.chunk_rows = 2  # duplicates across chunks, within a chunk, against the table
    ops.imports.start("acme", "leads", write(tmp_path / "a.csv", "Name,Email\nOld,old@example.com\n"))
    text = ("Name,Email,Company\nNew,new@example.com,A\nNew Again,NEW@example.com,B\n"
            "Old Renamed,old@example.com,C\nNew Thrice,new@example.com,D\n")
    info = ops.imports.start("acme", "leads", write(tmp_path / "b.csv", text))
    assert (info.success_count, info.skipped, info.updated) == (1, 3, 0)
    assert [r[:3] for r in leads(runtime)] == [("Old", "old@example.com", None), ("New", "new@example.com", "A")]
    info = ops.imports.start("acme", "leads", write(tmp_path / "c.csv", text), update_existing=True)
    assert (info.success_count, info.skipped, info.updated) == (4, 0, 4)
    assert [r[:3] for r in leads(runtime)] == [("Old Renamed", "old@example.com", "C"),
                                               ("New Thrice", "new@example.com", "D")]
    assert len(events_named(runtime, "lead.created")) == 2


def test_dry_run_validates_and_writes_nothing(runtime, ops, tenant, tmp_path):
    info = ops.imports.start("acme", "leads", write(tmp_path / "l.csv", CLEAN + "X,bad,,,\n"), dry_run=True)
    assert (info.status, info.success_count, info.failed_count) == ("finished", 2, 1)
    assert leads(runtime) == [] and events_named(runtime, "lead.created") == []


def xlsx(path: Path, rows: list[list]) -> Path:
    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("Leads")
    for r in rows:
        ws.append(r)
    wb.save(path)
    return path


def test_excel_import_with_mapping_and_typed_cells(runtime, ops, tenant, tmp_path):
    import datetime as dt

    path = xlsx(tmp_path / "c.xlsx", [["Given", "Family", "Email address", "Created"],
                                      ["Grace", "Hopper", "grace@example.com", dt.datetime(2026, 3, 1, 9, 30)],
                                      [None, None, None, None],
                                      ["Bad", "Row", "bad@", None]])
    info = ops.imports.start("acme", "contacts", path, mapping={"Given": "first_name", "Family": "last_name"})
    assert (info.success_count, info.failed_count) == (1, 1)
    assert [(e.row, e.column) for e in ops.imports.errors(info.id)] == [(4, "Email address")]
    with runtime.read_session() as s:
        row = s.execute(sa.select(CONTACTS.c.first_name, CONTACTS.c.last_name, CONTACTS.c.email,
                                  CONTACTS.c.created_at)).one()
    assert row[:3] == ("Grace", "Hopper", "grace@example.com") and row[3].year == 2026
    assert [p["email"] for p in events_named(runtime, "contact.created")] == ["grace@example.com"]


def test_a_zip_bomb_is_refused_quickly(runtime, ops, tenant, tmp_path):
    path = tmp_path / "bomb.xlsx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        with zf.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as f:
            block = b"\0" * (1 << 20)
            for _ in range(50):
                f.write(block)
    assert path.stat().st_size < 1_000_000
    t0 = time.monotonic()
    with pytest.raises(Invalid, match="zip bomb"):
        ops.imports.start("acme", "leads", path)
    assert time.monotonic() - t0 < 30  # generous: it stops at the central directory
    runtime.settings.imports.max_uncompressed_bytes = 10 * 1024 * 1024
    with pytest.raises(Invalid, match=r"expands to 52,428,808 bytes, over the limit of 10,485,760"):
        ops.imports.start("acme", "leads", path)
    runtime.settings.imports.max_zip_entries = 1
    with pytest.raises(Invalid, match="2 zip entries, over the limit of 1"):
        ops.imports.start("acme", "leads", path)


@pytest.mark.parametrize("what", ["truncated", "empty", "header-only-blank", "xlsx-not-zip"])
def test_broken_files_get_one_line_errors(runtime, ops, tenant, tmp_path, what):
    if what == "truncated":
        good = xlsx(tmp_path / "g.xlsx", [["Name", "Email"], *[[f"n{i}", f"n{i}@example.com"] for i in range(500)]])
        path = tmp_path / "t.xlsx"
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        expect = r"t.xlsx: not a valid .xlsx file \(truncated or corrupt"
    elif what == "empty":
        path = write(tmp_path / "e.csv", "")
        expect = "e.csv: the file is empty"
    elif what == "header-only-blank":
        path = write(tmp_path / "h.csv", ",,\n")
        expect = r"the first line \(the header\) is empty"
    else:
        path = write(tmp_path / "n.xlsx", "Name,Email\n")
        expect = "n.xlsx: not a valid .xlsx file"
    with pytest.raises(Invalid, match=expect):
        ops.imports.start("acme", "leads", path)
    assert leads(runtime) == []
    assert ops.imports.imports().items[0].status == "failed"


def test_an_interrupted_import_resumes_with_exact_counts(runtime, ops, tenant, tmp_path):
    runtime.settings.imports.chunk_rows = 3
    text = "Name,Email\n" + "".join(f"N{i},{'bad' if i % 4 == 0 else f'n{i}@example.com'}\n" for i in range(10))
    path = write(tmp_path / "r.csv", text)
    with runtime.session() as s:
        import_id = service.create_import(s, tenant, "leads", path).id

    class Killed(BaseException):
        pass

    def die_after_two_chunks(p):
        if p.processed >= 6:
            raise Killed

    with pytest.raises(Killed):
        service.run_import(runtime, import_id, progress=die_after_two_chunks)
    mid = ops.imports.get(import_id)
    assert (mid.status, mid.processed_rows, mid.success_count, mid.failed_count) == ("running", 6, 4, 2)
    final = service.run_import(runtime, import_id)  # what the re-enqueued ImportDataJob does
    assert (final.status, final.processed_rows, final.success_count, final.failed_count) == ("finished", 10, 7, 3)
    assert len(leads(runtime)) == 7 and len(events_named(runtime, "lead.created")) == 7
    assert [e.row for e in ops.imports.errors(import_id)] == [2, 6, 10]


def test_import_job_runs_through_the_queue_and_cancel(runtime, ops, tenant, tmp_path):
    from draining import drain

    info = ops.imports.start("acme", "leads", write(tmp_path / "q.csv", CLEAN), queue=True)
    assert info.status == "pending"
    assert drain(runtime) == 1
    assert ops.imports.get(info.id).status == "finished" and len(leads(runtime)) == 2
    with pytest.raises(Conflict):
        ops.imports.cancel(info.id)
    other = ops.imports.start("acme", "leads", write(tmp_path / "q2.csv", CLEAN), queue=True)
    assert ops.imports.cancel(other.id).status == "cancelled"
    drain(runtime)
    assert ops.imports.get(other.id).status == "cancelled" and len(leads(runtime)) == 2
    assert "cancelled" in ops.imports.summary()


def cli(rt: Runtime, *argv: str) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config")
    parser = argparse.ArgumentParser(prog="erpq")
    register(parser.add_subparsers(dest="group", required=True), common)
    args = parser.parse_args(argv)
    return args.handler(args, rt)


def test_cli_import_and_status(runtime, tenant, tmp_path, capsys):
    path = write(tmp_path / "l.csv", CLEAN + "Bad,x,,,\n")
    assert cli(runtime, "import", str(path), "--type", "leads", "--tenant", "acme") == 0
    out, err = capsys.readouterr()
    assert "Imported 3 row(s) of l.csv: 2 ok, 1 with errors" in out
    assert err.startswith("import 1: 3/3 rows") and "rows/s" in err  # not a terminal: plain lines
    errors = tmp_path / "e.csv"
    assert cli(runtime, "import", "status", "1", "--errors-csv", str(errors)) == 0
    assert "finished" in capsys.readouterr().out
    assert list(csv.reader(io.StringIO(errors.read_text())))[1:] == [["4", "Email", "not an email address: 'x'"]]
    with pytest.raises(Invalid, match="mapping names unknown leads field 'nope'"):
        cli(runtime, "import", str(path), "--type", "leads", "--tenant", "acme", "--mapping", '{"Name": "nope"}')
    with pytest.raises(Invalid, match="unknown import type 'things'"):
        Ops(runtime).imports.start("acme", "things", path)


@pytest.mark.parametrize("backend", ["postgres", "mariadb"])
def test_import_on_server_databases(tmp_path, backend, request):
    url = request.getfixturevalue("pg_url" if backend == "postgres" else "mariadb_url")
    from erpq.db import make_engine, upgrade

    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    rt = Runtime(make_settings(tmp_path, database={"url": url}, imports={"chunk_rows": 2}))
    set_current(rt)
    try:
        add_tenant(rt)
        ops = Ops(rt, Actor("tester", None, "cli"))
        text = CLEAN + "Ada Again,ADA@example.com,X,new,\nBad,bad,,,\nZed,zed@example.com,,lost,\n"
        info = ops.imports.start("acme", "leads", write(tmp_path / "l.csv", text))
        assert (info.success_count, info.failed_count, info.skipped) == (3, 1, 1)
        assert [r[1] for r in leads(rt)] == ["ada@example.com", "alan@example.com", "zed@example.com"]
        ids = [p["id"] for p in events_named(rt, "lead.created")]
        with rt.read_session() as s:
            assert ids == list(s.scalars(sa.select(LEADS.c.id).order_by(LEADS.c.id)))
    finally:
        set_current(None)
        rt.close()


def test_console_panels_read_and_act_through_the_ops_section(runtime, ops, tenant, tmp_path):
    from erpq.imports.capability import CAPABILITY

    info = ops.imports.start("acme", "leads", write(tmp_path / "l.csv", CLEAN + "Bad,x,,,\n"))
    section = ops.section("imports")
    panels = {p.key: p for p in CAPABILITY.panels}
    page = getattr(section, panels["imports"].read)(0, 10, None)
    row = page.items[0].to_dict()
    assert page.total == 1 and all(field in row for field, _, _ in panels["imports"].columns)
    assert row["rows_per_s"] > 0 and row["eta_s"] is None  # finished: no ETA
    errors = getattr(section, panels["import_errors"].read)(0, 10, None)
    assert [(e.import_id, e.row, e.column) for e in errors.items] == [(info.id, 4, "Email")]
    assert getattr(section, panels["import_errors"].read)(0, 10, str(info.id)).total == 1
    assert "finished" in section.summary()
    for action in panels["imports"].actions:
        assert callable(getattr(section, action.method))


def test_imported_events_are_fanned_out_from_the_outbox(runtime, ops, tenant, tmp_path):
    from erpq import events

    seen = []

    def handler(ev):
        seen.append((ev.payload["email"], ev.id))

    events.on("lead.created")(handler)
    try:
        ops.imports.start("acme", "leads", write(tmp_path / "l.csv", CLEAN))
        with runtime.read_session() as s:  # written with the rows, fanned out after their commit
            rows = list(s.execute(sa.select(EventOutbox.id, EventOutbox.status).order_by(EventOutbox.id)))
        assert [status for _, status in rows] == ["done", "done"]
        assert seen == [("ada@example.com", str(rows[0][0])), ("alan@example.com", str(rows[1][0]))]
        assert events.sweep(runtime) == 0 and len(seen) == 2
    finally:
        events._handlers.remove(("lead.created", handler))
