"""Bad-input cases of the crm capability (records, notifications, workflows)."""

from hypothesis import strategies as st

from badinput import Case, datetimes, id_text, nasty_text, number_text, register

LEAD = (("lead", "add", "--tenant", "acme", "--set", "name=Lee", "--set", "email=lee@example.com"),)
fields = st.sampled_from(["name", "email", "status", "company", "source", "owner_id", "title", "amount",
                          "due_at", "assigned_to", "nosuch", ""])
sets = st.lists(st.tuples(fields, st.one_of(nasty_text, number_text, datetimes)), min_size=1, max_size=3).map(
    lambda kv: [a for k, v in kv for a in ("--set", f"{k}={v}")])
tenants = st.sampled_from(["acme", "1", "99999999999", "ghost"])

register(Case("crm add", st.tuples(st.sampled_from(["lead", "contact", "deal", "activity"]), tenants, sets).map(
    lambda t: [t[0], "add", "--tenant", t[1], *t[2]]), owner="crm"))
register(Case("crm update", st.tuples(st.sampled_from(["lead", "deal"]), id_text, sets).map(
    lambda t: [t[0], "update", t[1], *t[2]]), setup=LEAD, owner="crm"))
register(Case("crm list", st.tuples(number_text, number_text, nasty_text).map(
    lambda t: ["lead", "list", "--limit", t[0], "--offset", t[1], "--status", t[2]]), owner="crm"))
register(Case("activity due", st.tuples(number_text, nasty_text).map(
    lambda t: ["activity", "due", "--within", t[0], "--search", t[1]]), owner="crm"))
register(Case("notifications", st.tuples(st.sampled_from(["read", "list --user"]), id_text).map(
    lambda t: ["notifications", *t[0].split(), t[1]]), owner="crm"))
register(Case("workflow show/resume", st.tuples(st.sampled_from(["show", "resume"]), id_text).map(
    lambda t: ["workflow", t[0], t[1]]), owner="crm"))
