"""Recurring invoice generation: erpq's generator against a bare SQLAlchemy Core loop, same run.

    python bench/invoicing.py [--templates 20000] [--db sqlite|postgresql|both]
                              [--postgres-url URL] [--batch 200] [--profile] [--smoke]

Issue 12 asks for at least half the bare loop's rate (ratio >= 0.5x).

Setup, outside both clocks: a fresh schema (SQLite: a new file per side;
PostgreSQL: every table of the database dropped and erpq's migrations run again
before each side), 4 tenants and N monthly templates with two lines each, all
due on the same day (one period each), inserted with a Core executemany.

Then, on the clock, the same N invoices and 2N lines each way:

1. erpq: ``erpq.invoicing.service.generate(rt, as_of)``, the business function
   the periodic task ``erp:generate-recurring-invoices`` runs: due templates
   selected in batches and locked, lines parsed and rounded, numbers taken from
   the locked sequence rows, invoices and lines inserted, templates moved on, one
   ``invoice.created`` event per invoice written to the outbox in the same
   transaction and fanned out after the commit (to the webhooks handler; no
   subscriptions exist, so it queues nothing). Clock: from "templates are due"
   to "generate() returned": invoices committed and their events fanned out.
2. bare loop: a hand-written Core generator on the same schema and the same
   engine settings: per batch of templates (same batch size) one SELECT of the
   due templates, amounts and numbers computed in Python, an executemany INSERT
   of the invoices (RETURNING their ids), an executemany INSERT of the lines, an
   executemany UPDATE moving the templates on, COMMIT. No locks, no outbox, no
   sequence rows. Clock: from "templates are due" to "last batch committed".
   Its two inserts alone are also timed (``inserts only``), the floor of any
   generator.

Both sides' invoices are compared afterwards (number, template, period, dates,
amounts, currency), so the two clocks cover the same rows. Prints both rates
(invoices/s), the ratio erpq / bare, and the ratio against the inserts alone.
``--profile`` runs the erpq side under cProfile and prints where the time goes.
``--smoke`` runs 200 templates (on ``--db``): it proves the benchmark runs and
measures nothing.

The PostgreSQL database (default ``erpq_bench_inv``, created when missing) is
emptied: every table in it is dropped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

SMOKE_TEMPLATES = 200
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/erpq_bench_inv"
AS_OF = dt.date(2027, 3, 15)
TENANTS = 4
LINES = [{"description": "Support plan", "quantity": "3", "unit_price": "19.99", "tax_rate": "19"},
         {"description": "Hosting", "quantity": "1", "unit_price": "49.50", "tax_rate": "19"}]
CENT = Decimal("0.01")


# ---------------------------------------------------------------- setup (outside the clocks)


def fresh_schema(url: str) -> None:
    """Drop every table of the database (server) and run erpq's migrations."""
    import sqlalchemy as sa

    from erpq.db import make_engine, upgrade

    engine = make_engine(url)
    try:
        if engine.dialect.name == "postgresql":
            _create_pg_database(engine.url)
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.begin() as conn:
            for table in reversed(meta.sorted_tables):
                conn.execute(sa.schema.DropTable(table, if_exists=True))
        upgrade(engine)
    finally:
        engine.dispose()


def _create_pg_database(url) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if not conn.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": url.database}):
                conn.exec_driver_sql(f'CREATE DATABASE "{url.database}"')
    finally:
        admin.dispose()


def seed(engine, n: int) -> None:
    """TENANTS tenants and n monthly templates due on AS_OF (one period each)."""
    import sqlalchemy as sa

    from erpq.db import utcnow
    from erpq.invoicing.models import RecurringInvoice
    from erpq.models import Tenant

    now = utcnow()
    with engine.begin() as conn:
        conn.execute(sa.insert(Tenant), [{"slug": f"t{i}", "name": f"Tenant {i}"} for i in range(TENANTS)])
        tenant_ids = list(conn.scalars(sa.select(Tenant.id).order_by(Tenant.id)))
        rows = [{"tenant_id": tenant_ids[i % TENANTS], "name": f"Plan {i}", "frequency": "monthly", "interval": 1,
                 "start_date": AS_OF, "next_date": AS_OF, "occurrences": 0, "lines": LINES, "currency": "EUR",
                 "is_active": True, "payment_terms_days": 14, "consecutive_failures": 0, "created_at": now}
                for i in range(n)]
        for i in range(0, n, 5000):
            conn.execute(sa.insert(RecurringInvoice), rows[i:i + 5000])


INVOICE_KEY = ("number", "tenant_id", "recurring_invoice_id", "period_start", "period_end", "issue_date", "due_date",
               "subtotal", "tax_total", "total", "currency", "status")


def invoices_of(engine) -> list[tuple]:
    """What both sides must have written: the invoices (without ids) and the line count."""
    import sqlalchemy as sa

    from erpq.invoicing.models import Invoice, InvoiceLine

    t = Invoice.__table__
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.select(*(t.c[k] for k in INVOICE_KEY)).order_by(t.c.number,
                                                                                                 t.c.tenant_id))]
        lines = conn.scalar(sa.select(sa.func.count()).select_from(InvoiceLine))
    return rows + [("lines", lines)]


class Timing:
    """Wall-clock and CPU seconds of this process over a ``with`` block."""

    seconds = cpu = 0.0

    def __enter__(self) -> Timing:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


# ---------------------------------------------------------------- erpq


def erpq_run(url: str, n: int, batch: int, tmp: Path, profile: bool) -> tuple[Timing, list[tuple]]:
    import sqlalchemy as sa

    from erpq.config import from_dict
    from erpq.invoicing import service
    from erpq.models import EventOutbox
    from erpq.runtime import Runtime, set_current

    fresh_schema(url)
    settings = from_dict({"queue": {"url": "sqlite:///queue.db"}, "database": {"url": url},
                          "log": {"path": "erpq.log"}, "invoicing": {"batch_size": batch}},
                         source=str(tmp / "config.toml"), base_dir=str(tmp))
    rt = Runtime(settings)
    set_current(rt)
    try:
        seed(rt.engine, n)
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        with Timing() as timing:
            result = service.generate(rt, AS_OF)
        if profiler is not None:
            profiler.disable()
            import pstats

            print(f"\n--- cProfile of the erpq side ({url.split(':', 1)[0]}), top 30 by cumulative time ---")
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(30)
            print("--- top 20 by own time ---")
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(20)
        assert (result.invoices, result.templates, result.failed) == (n, n, {}), result.summary()
        with rt.read_session() as s:
            events = dict(s.execute(sa.select(EventOutbox.status, sa.func.count())
                                    .where(EventOutbox.name == "invoice.created").group_by(EventOutbox.status)).all())
        assert events == {"done": n}, f"events: {events}"
        return timing, invoices_of(rt.engine)
    finally:
        set_current(None)
        rt.close()


# ---------------------------------------------------------------- bare Core loop


def _amounts(lines: list[dict]) -> tuple[list[dict], Decimal, Decimal]:
    out, sub, tax = [], Decimal(0), Decimal(0)
    for pos, ln in enumerate(lines, 1):
        qty, price, rate = Decimal(ln["quantity"]), Decimal(ln["unit_price"]), Decimal(ln["tax_rate"])
        net = (qty * price).quantize(CENT, ROUND_HALF_UP)
        t = (net * rate / 100).quantize(CENT, ROUND_HALF_UP)
        out.append({"position": pos, "description": ln["description"], "quantity": qty, "unit_price": price,
                    "tax_rate": rate, "net": net, "tax": t, "total": net + t})
        sub, tax = sub + net, tax + t
    return out, sub, tax


def _next_month(d: dt.date) -> dt.date:
    return d.replace(year=d.year + d.month // 12, month=d.month % 12 + 1)  # day 15: never clamped


def bare_run(url: str, n: int, batch: int) -> tuple[Timing, float, list[tuple]]:
    """(timing, seconds in the two inserts, invoices) for the hand-written Core generator."""
    import sqlalchemy as sa

    from erpq.db import make_engine, utcnow
    from erpq.invoicing.models import Invoice, InvoiceLine, RecurringInvoice

    fresh_schema(url)
    engine = make_engine(url)
    try:
        seed(engine, n)
        inv, line, tpl = Invoice.__table__, InvoiceLine.__table__, RecurringInvoice.__table__
        due = (sa.select(tpl.c.id, tpl.c.tenant_id, tpl.c.contact_id, tpl.c.lines, tpl.c.currency,
                         tpl.c.payment_terms_days, tpl.c.next_date, tpl.c.occurrences)
               .where(tpl.c.is_active.is_(True), tpl.c.paused_at.is_(None), tpl.c.next_date <= AS_OF,
                      tpl.c.id > sa.bindparam("last")).order_by(tpl.c.id).limit(batch))
        insert_invoices = sa.insert(inv).returning(inv.c.id, sort_by_parameter_order=True)
        insert_lines = sa.insert(line)
        advance = (sa.update(tpl).where(tpl.c.id == sa.bindparam("b_id"))
                   .values(occurrences=sa.bindparam("b_occ"), next_date=sa.bindparam("b_next")))
        seq: dict[int, int] = {}
        inserting = 0.0
        made = 0
        with Timing() as timing:
            last = 0
            while True:
                with engine.begin() as conn:
                    templates = conn.execute(due, {"last": last}).all()
                    if not templates:
                        break
                    now = utcnow()
                    invoices, lines_of, moves = [], [], []
                    for t in templates:
                        lines, sub, tax = _amounts(t.lines)
                        seq[t.tenant_id] = seq.get(t.tenant_id, 0) + 1
                        following = _next_month(t.next_date)
                        invoices.append({
                            "tenant_id": t.tenant_id, "number": f"INV-{t.next_date.year}-{seq[t.tenant_id]:06d}",
                            "contact_id": t.contact_id, "recurring_invoice_id": t.id, "period_start": t.next_date,
                            "period_end": following - dt.timedelta(days=1), "issue_date": t.next_date,
                            "due_date": t.next_date + dt.timedelta(days=t.payment_terms_days), "subtotal": sub,
                            "tax_total": tax, "total": sub + tax, "currency": t.currency, "status": "issued",
                            "created_at": now})
                        lines_of.append(lines)
                        moves.append({"b_id": t.id, "b_occ": t.occurrences + 1, "b_next": following})
                    started = time.perf_counter()
                    ids = list(conn.execute(insert_invoices, invoices).scalars())
                    conn.execute(insert_lines, [{**ln, "tenant_id": i["tenant_id"], "invoice_id": iid}
                                                for iid, i, lines in zip(ids, invoices, lines_of, strict=True)
                                                for ln in lines])
                    inserting += time.perf_counter() - started
                    conn.execute(advance, moves)
                    made += len(invoices)
                    last = templates[-1].id
        assert made == n, f"bare loop made {made} invoices, not {n}"
        return timing, inserting, invoices_of(engine)
    finally:
        engine.dispose()


# ---------------------------------------------------------------- main


def run(db: str, url: str, n: int, batch: int, profile: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="erpq-bench-inv-") as tmp_name:
        tmp = Path(tmp_name)
        if db == "sqlite":
            erpq_url, bare_url = f"sqlite:///{tmp / 'erpq.db'}", f"sqlite:///{tmp / 'bare.db'}"
        else:
            erpq_url = bare_url = url
        erpq_t, erpq_rows = erpq_run(erpq_url, n, batch, tmp, profile)
        bare_t, inserting, bare_rows = bare_run(bare_url, n, batch)
    assert erpq_rows == bare_rows, "erpq and the bare loop wrote different invoices"
    erpq_rate, bare_rate, insert_rate = n / erpq_t.seconds, n / bare_t.seconds, n / inserting
    ratio = erpq_rate / bare_rate
    print(f"{db}: {n} due templates -> {n} invoices, {2 * n} lines (batches of {batch})")
    print(f"  erpq generate()       {erpq_rate:9.0f} invoices/s  ({erpq_t.seconds:.2f} s wall, "
          f"{erpq_t.cpu * 1e6 / n:.0f} us CPU/invoice)")
    print(f"  bare Core generator   {bare_rate:9.0f} invoices/s  ({bare_t.seconds:.2f} s wall, "
          f"{bare_t.cpu * 1e6 / n:.0f} us CPU/invoice)")
    print(f"  bare inserts only     {insert_rate:9.0f} invoices/s  ({inserting:.2f} s)")
    print(f"  ratio erpq / bare generator: {ratio:.2f}x (target >= 0.5x)"
          f"{'' if ratio >= 0.5 else '  BELOW TARGET'}; erpq / bare inserts only: {erpq_rate / insert_rate:.2f}x")
    return ratio


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--templates", type=int, default=20000, help="due templates, one invoice each (default 20000)")
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both",
                   help="database kind (default: both, SQLite then PostgreSQL)")
    p.add_argument("--postgres-url", default=DEFAULT_PG,
                   help=f"PostgreSQL database to empty and use (default {DEFAULT_PG}; created when missing)")
    p.add_argument("--batch", type=int, default=200, help="templates per transaction, both sides (default 200)")
    p.add_argument("--profile", action="store_true", help="run the erpq side under cProfile and print the top")
    p.add_argument("--smoke", action="store_true",
                   help=f"{SMOKE_TEMPLATES} templates: proves it runs, measures nothing")
    args = p.parse_args(argv)
    n, dbs = args.templates, ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    if args.smoke:
        n = SMOKE_TEMPLATES
    print('On the clock, each side: from "templates are due" to "invoices committed" (erpq: and their '
          'invoice.created events fanned out). Seeding the templates and creating the schema are outside both.')
    for db in dbs:
        run(db, args.postgres_url, n, args.batch, args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
