"""Bad-input cases of the reports capability (definitions, exports, schedules)."""

from hypothesis import strategies as st

from badinput import Case, crons, id_text, json_text, nasty_text, register, timezones

REPORT = (("report", "create", "Leads", "--kind", "leads", "--tenant", "acme"),)

register(Case("report create", st.tuples(nasty_text, st.one_of(st.just("leads"), nasty_text), json_text,
                                         nasty_text).map(
    lambda t: ["report", "create", t[0], "--kind", t[1], "--tenant", "acme", "--filters", t[2],
               "--columns", t[3]]), owner="reports"))
register(Case("report schedule add", st.tuples(id_text, crons, timezones, nasty_text).map(
    lambda t: ["report", "schedule", "add", t[0], "--cron", t[1], "--timezone", t[2], "--to", t[3]]),
    setup=REPORT, owner="reports"))
register(Case("report schedule actions", st.tuples(st.sampled_from(["pause", "resume", "remove", "run"]),
                                                   id_text).map(lambda t: ["report", "schedule", t[0], t[1]]),
              owner="reports"))
register(Case("report run --email", st.tuples(id_text, nasty_text).map(
    lambda t: ["report", "run", t[0], "--format", "csv", "--email", t[1]]), setup=REPORT, owner="reports"))
