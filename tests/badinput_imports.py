"""Bad-input cases of the imports capability (``erpq import ...``)."""

from hypothesis import strategies as st

from badinput import Case, json_text, nasty_text, register

FILES = (("leads.csv", "Name,Email\nIvy,ivy@example.com\n"),)

register(Case("import file", st.tuples(st.one_of(st.just("{tmp}/leads.csv"), nasty_text),
                                       st.sampled_from(["leads", "contacts", "deals"]), json_text,
                                       st.one_of(st.sampled_from(["utf-8", "cp1252", "klingon"]), nasty_text)).map(
    lambda t: ["import", t[0], "--type", t[1], "--tenant", "acme", "--mapping", t[2], "--encoding", t[3],
               "--dry-run"]), files=FILES, owner="imports"))
register(Case("import status/cancel", st.tuples(st.sampled_from(["status", "cancel"]), nasty_text).map(
    lambda t: ["import", t[0], t[1]]), owner="imports"))
