"""Per-tenant fairness must not cost throughput: erpq with ``queue.fair`` off and
on, the same no-op jobs spread over N tenants (enqueued tenant by tenant), on the
SQLite and the Redis store; prints jobs/s of both and the ratio (target >= 0.90).

Same as ``erpq bench queue --tenants 10``. ``--smoke``: 200 jobs.
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    from erpq.bench import run_fairness_bench

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--tenants", type=int, default=10)
    p.add_argument("--store", action="append", choices=["sqlite", "redis"])
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    p.add_argument("--rounds", type=int, default=2, help="rounds per side, alternating order; best kept")
    p.add_argument("--smoke", action="store_true", help="200 jobs: only check that it runs")
    args = p.parse_args(argv)
    return run_fairness_bench(jobs=200 if args.smoke else args.jobs, workers=args.workers, tenants=args.tenants,
                              stores=args.store, redis_url=args.redis_url, rounds=1 if args.smoke else args.rounds)


if __name__ == "__main__":
    raise SystemExit(main())
