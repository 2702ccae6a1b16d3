"""Property-based tests (hypothesis) of issue 13: for generated command lines,
config files, cron expressions, webhook URLs and event payloads the outcome is
exit 0 with the effect, or one line with exit 1/2 and nothing stored changed —
never a traceback. Runs on SQLite and PostgreSQL.

The core's command families are registered here; each capability registers its
own in ``tests/badinput_<capability>.py`` (see tests/badinput.py and
docs/capabilities.md), and every registered case runs here on both backends.
CI: a fixed, derandomized profile; the number of generated command lines is
printed at the end of the run (``HYPOTHESIS_PROFILE=dev`` explores more, randomly).
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from badinput import (
    GENERATED,
    Case,
    assert_outcome,
    close_dumps,
    dump,
    grew,
    json_text,
    json_values,
    load_cases,
    nasty_text,
    number_text,
    register,
    run_cli,
    setup_commands,
    urls,
    write_config,
)
from conftest import PG_URL, db_available, need, reset_database
from erpq.runtime import job, set_current

settings.register_profile("ci", derandomize=True, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
settings.register_profile("dev", deadline=None, max_examples=200, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: Examples per registered case and backend (SQLite, PostgreSQL); ERPQ_PROP_SCALE=N runs N times as many.
SCALE = max(1, int(os.environ.get("ERPQ_PROP_SCALE", "1")))
PER_CASE = {"sqlite": 6 * SCALE, "postgres": 3 * SCALE}


@job("PropEcho")
def prop_echo(text, n=0):
    return text


# ---------------------------------------------------------------- the core's command families

register(Case("queue prune-failed", number_text.map(lambda h: ["queue", "prune-failed", "--hours", h])))
register(Case("log -n", number_text.map(lambda n: ["log", "-n", n])))
register(Case("queue failed paging", st.tuples(number_text, number_text).map(
    lambda t: ["queue", "failed", "--limit", t[0], "--offset", t[1]])))
register(Case("queue show/forget/restore", st.tuples(st.sampled_from(["show", "forget", "restore", "retry"]),
                                                     number_text).map(lambda t: ["queue", t[0], t[1]])))
register(Case("queue dispatch", json_text.map(lambda a: ["queue", "dispatch", "PropEcho", "--args", a]),
              grew("pending")))
register(Case("event emit", json_text.map(
    lambda d: ["event", "emit", "deal.created", "--tenant", "acme", "--data", d]), grew("event_outbox")))
register(Case("tenant add", st.tuples(nasty_text, nasty_text).map(
    lambda t: ["tenant", "add", t[0], "--name", t[1]]), grew("tenants")))
register(Case("user add", st.tuples(nasty_text, st.sampled_from(["acme", "1", "99999999999", "ghost"]),
                                    nasty_text).map(
    lambda t: ["user", "add", t[0], "--tenant", t[1], "--email", t[2]])))

CASES = load_cases()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend(request, tmp_path_factory):
    """One database per backend for every case (each example compares its own before and after)."""
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite":
        url = f"sqlite:///{tmp}/db.sqlite"
    else:
        need("PostgreSQL", db_available(PG_URL), PG_URL)
        reset_database(PG_URL)
        url = PG_URL
    cfg = write_config(tmp, url, extra=f'[mailing]\nkey_file = "{_mail_key(tmp)}"\n')
    for case in CASES:
        for fname, text in case.files:
            (tmp / fname).write_text(text)
    for argv in [["db", "upgrade"], ["tenant", "add", "acme"], ["user", "add", "Ann", "--tenant", "acme"],
                 *setup_commands()]:
        r = run_cli(cfg, [a.replace("{tmp}", str(tmp)) for a in argv])
        assert r.code == 0, (argv, r)
    yield request.param, cfg, str(tmp)
    close_dumps()
    set_current(None)


def _mail_key(tmp) -> str:
    from cryptography.fernet import Fernet

    path = tmp / "mail.key"
    path.write_bytes(Fernet.generate_key())
    return str(path)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_command_is_done_or_one_line_and_nothing_changed(backend, case):
    name, cfg, tmp = backend

    @settings(max_examples=PER_CASE[name])
    @given(argv=case.argv)
    def prop(argv):
        argv = [a.replace("{tmp}", tmp) for a in argv]
        GENERATED[name] = GENERATED.get(name, 0) + 1
        before = dump(cfg)
        result = run_cli(cfg, argv)
        after = dump(cfg)
        assert_outcome(result, before, after, argv)
        if case.check:
            case.check(result, before, after)

    prop()


# ---------------------------------------------------------------- pure loaders (no database)


toml_scalars = st.one_of(st.integers(min_value=-(2**40), max_value=2**40), st.floats(), st.booleans(),
                         st.text(max_size=20), st.lists(st.text(max_size=8), max_size=3))
config_keys = st.sampled_from([("queue", "url"), ("queue", "workers"), ("queue", "max_args_bytes"),
                               ("database", "url"), ("runner", "heartbeat_s"), ("runner", "dead_after_s"),
                               ("runner", "periodic_check_s"), ("retention", "history_days"),
                               ("schedule", "timezone"), ("log", "level"), ("webhooks", "timeout_s"),
                               ("webhooks", "allow_hosts"), ("nosuch", "key"), ("queue", "nosuch")])


@settings(max_examples=60)
@given(st.dictionaries(config_keys, toml_scalars, max_size=4))
def test_config_loader_gives_settings_or_one_config_error(tmp_path_factory, items):
    from erpq.config import ConfigError, from_dict

    raw: dict = {}
    for (section, key), value in items.items():
        raw.setdefault(section, {})[key] = value
    try:
        from_dict(raw, source="gen.toml", base_dir=str(tmp_path_factory.getbasetemp()))
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("gen.toml")


@settings(max_examples=60)
@given(st.one_of(nasty_text, st.lists(st.sampled_from(["*", "*/5", "0", "59", "60", "1-3", "7", "L", "MON",
                                                       "?", "-1", "1,2", "*/0"]),
                                      min_size=1, max_size=7).map(" ".join)))
def test_cron_expressions_in_config_are_valid_or_one_config_error(tmp_path_factory, expr):
    from erpq.config import ConfigError, from_dict

    raw = {"schedule": {"cron": {"erp:check-system-health": expr}}}
    try:
        from_dict(raw, source="gen.toml", base_dir=str(tmp_path_factory.getbasetemp()))
    except ConfigError as exc:
        assert "\n" not in str(exc) and "erp:check-system-health" in str(exc)


@settings(max_examples=60)
@given(urls)
def test_webhook_url_check_refuses_in_one_line(url):
    from erpq.webhooks import service

    try:
        assert service.check_url(url) == url
    except service.WebhookError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=60)
@given(json_values)
def test_event_payload_is_storable_or_refused(payload):
    from erpq.ops import Invalid
    from erpq.ops.base import check_json_payload

    try:
        text = check_json_payload(payload, "event data")
    except Invalid as exc:
        assert "\n" not in str(exc)
    else:
        text.encode("utf-8")  # what delivery sends
        json.loads(text)
