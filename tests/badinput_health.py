"""Bad-input cases of the health capability (``erpq health ...``; no --probe: it waits for a worker)."""

from hypothesis import strategies as st

from badinput import Case, nasty_text, number_text, register

register(Case("health history", st.tuples(st.sampled_from(["acme", "1", "ghost"]), nasty_text, number_text).map(
    lambda t: ["health", "--history", "--tenant", t[0] if t[1] == "" else t[1], "--limit", t[2]]),
    owner="health"))
