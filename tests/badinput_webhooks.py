"""Bad-input cases of the webhooks capability (``erpq webhook ...``), run by tests/test_bad_input_props.py."""

from hypothesis import strategies as st

from badinput import Case, grew, id_text, nasty_text, number_text, register, urls

HOOK = (("webhook", "add", "https://example.com/hook", "--tenant", "acme"),)

register(Case("webhook add", urls.map(lambda u: ["webhook", "add", u, "--tenant", "acme"]), grew("erp_webhooks"),
              owner="webhooks"))
register(Case("webhook disable", st.tuples(id_text, nasty_text).map(
    lambda t: ["webhook", "disable", t[0], "--reason", t[1]]), setup=HOOK, owner="webhooks"))
register(Case("webhook enable/rotate-secret", st.tuples(st.sampled_from(["enable", "rotate-secret"]), id_text).map(
    lambda t: ["webhook", t[0], t[1]]), setup=HOOK, owner="webhooks"))
register(Case("webhook redeliver", st.one_of(id_text, nasty_text).map(lambda r: ["webhook", "redeliver", r]),
              owner="webhooks"))
register(Case("webhook deliveries", st.tuples(number_text, number_text, nasty_text).map(
    lambda t: ["webhook", "deliveries", "--limit", t[0], "--offset", t[1], "--status", t[2]]), owner="webhooks"))
