"""Property-based tests (hypothesis) of issue 13: for generated command lines,
config files, cron expressions, webhook URLs and event payloads the outcome is
exit 0 with the effect, or one line with exit 1/2 and nothing stored changed —
never a traceback. Runs on SQLite and PostgreSQL.

Add a capability's commands with ``badinput.register(Case(...))`` (see
tests/badinput.py); each registered case runs here on both backends.
CI: a fixed, derandomized profile of a few hundred examples in all
(``HYPOTHESIS_PROFILE=dev`` explores more, randomly).
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from badinput import (
    CASES,
    Case,
    Result,
    assert_outcome,
    close_dumps,
    dump,
    register,
    run_cli,
    write_config,
)
from conftest import PG_URL, db_available, need, reset_database
from erpq.runtime import job, set_current

settings.register_profile("ci", derandomize=True, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
settings.register_profile("dev", deadline=None, max_examples=200, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: Examples per registered case and backend (SQLite, PostgreSQL).
PER_CASE = {"sqlite": 6, "postgres": 3}


@job("PropEcho")
def prop_echo(text, n=0):
    return text


# ---------------------------------------------------------------- strategies

#: Text as argv may carry it: any code point, bytes that were not UTF-8 (surrogates), NUL.
nasty_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from("a-Z9 /é\udce9\x00'\"%_\n"), max_size=40),
    st.text(min_size=250, max_size=700, alphabet="ab"),
)
number_text = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e12", "0x10", "", "٣", "1_000"]),
    nasty_text,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | nasty_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(nasty_text, children, max_size=4),
    max_leaves=12,
)
json_text = st.one_of(json_values.map(lambda v: json.dumps(v, ensure_ascii=False)), nasty_text)
urls = st.one_of(
    nasty_text,
    st.builds(lambda scheme, host, path: f"{scheme}://{host}/{path}",
              st.sampled_from(["https", "http", "ftp", "file", "HTTPS", ""]),
              st.sampled_from(["example.com", "127.0.0.1", "[::1]", "10.0.0.1", "169.254.169.254", "0",
                               "user:pw@example.com", "example.com:99999", "xn--caf-dma.com", "ex ample.com"]),
              nasty_text),
)


def _grew(table: str, by: int = 1):
    def check(result: Result, before: dict, after: dict) -> None:
        if result.code == 0:
            assert len(after[table]) == len(before[table]) + by, (table, result)
    return check


register(Case("queue prune-failed", number_text.map(lambda h: ["queue", "prune-failed", "--hours", h])))
register(Case("log -n", number_text.map(lambda n: ["log", "-n", n])))
register(Case("queue failed paging", st.tuples(number_text, number_text).map(
    lambda t: ["queue", "failed", "--limit", t[0], "--offset", t[1]])))
register(Case("queue show/forget/restore", st.tuples(st.sampled_from(["show", "forget", "restore", "retry"]),
                                                     number_text).map(lambda t: ["queue", t[0], t[1]])))
register(Case("queue dispatch", json_text.map(lambda a: ["queue", "dispatch", "PropEcho", "--args", a]),
              _grew("pending")))
register(Case("webhook add", urls.map(lambda u: ["webhook", "add", u, "--tenant", "acme"]),
              _grew("erp_webhooks")))
register(Case("webhook disable", st.tuples(number_text, nasty_text).map(
    lambda t: ["webhook", "disable", t[0], "--reason", t[1]])))
register(Case("event emit", json_text.map(
    lambda d: ["event", "emit", "deal.created", "--tenant", "acme", "--data", d]), _grew("event_outbox")))
register(Case("tenant add", st.tuples(nasty_text, nasty_text).map(
    lambda t: ["tenant", "add", t[0], "--name", t[1]]), _grew("tenants")))
register(Case("user add", st.tuples(nasty_text, st.sampled_from(["acme", "1", "99999999999", "ghost"]),
                                    nasty_text).map(
    lambda t: ["user", "add", t[0], "--tenant", t[1], "--email", t[2]])))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/db.sqlite"
    else:
        need("PostgreSQL", db_available(PG_URL), PG_URL)
        reset_database(PG_URL)
        url = PG_URL
    cfg = write_config(tmp_path, url)
    assert run_cli(cfg, ["db", "upgrade"]).code == 0
    assert run_cli(cfg, ["tenant", "add", "acme"]).code == 0
    assert run_cli(cfg, ["webhook", "add", "https://example.com/hook", "--tenant", "acme"]).code == 0
    yield request.param, cfg
    close_dumps()
    set_current(None)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_command_is_done_or_one_line_and_nothing_changed(backend, case):
    name, cfg = backend

    @settings(max_examples=PER_CASE[name])
    @given(argv=case.argv)
    def prop(argv):
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
