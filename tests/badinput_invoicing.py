"""Bad-input cases of the invoicing capability (recurring templates, generate)."""

from hypothesis import strategies as st

from badinput import Case, dates, id_text, nasty_text, number_text, register

TEMPLATE = (("invoice", "recurring", "add", "--tenant", "acme", "--name", "Monthly", "--line", "Support;1;10",
             "--frequency", "monthly"),)
lines = st.one_of(nasty_text, st.tuples(nasty_text, number_text, number_text, number_text).map(";".join))

register(Case("invoice recurring add", st.tuples(
    nasty_text, lines, st.sampled_from(["daily", "weekly", "monthly", "yearly"]), number_text, number_text,
    dates, dates, number_text, nasty_text).map(
    lambda t: ["invoice", "recurring", "add", "--tenant", "acme", "--name", t[0], "--line", t[1],
               "--frequency", t[2], "--interval", t[3], "--anchor-day", t[4], "--start", t[5], "--end", t[6],
               "--terms", t[7], "--currency", t[8]]), owner="invoicing"))
register(Case("invoice recurring pause/resume", st.tuples(st.sampled_from(["pause", "resume"]), id_text).map(
    lambda t: ["invoice", "recurring", t[0], t[1]]), setup=TEMPLATE, owner="invoicing"))
register(Case("invoice generate", dates.map(lambda d: ["invoice", "generate", "--date", d]), setup=TEMPLATE,
              owner="invoicing"))
register(Case("invoice list", st.tuples(dates, number_text).map(
    lambda t: ["invoice", "list", "--since", t[0], "--limit", t[1]]), owner="invoicing"))
