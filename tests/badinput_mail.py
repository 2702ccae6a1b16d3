"""Bad-input cases of the mail capability (accounts, emails, campaigns)."""

import os

from hypothesis import strategies as st

from badinput import Case, datetimes, id_text, nasty_text, number_text, register

os.environ.setdefault("ERPQ_PROP_MAIL_PW", "prop-secret")
ACCOUNT = ("mail", "account", "add", "box@example.com", "--tenant", "acme", "--imap-host", "127.0.0.1",
           "--imap-port", "1", "--imap-security", "none", "--imap-password-env", "ERPQ_PROP_MAIL_PW")
CAMPAIGN = ("campaign", "create", "--tenant", "acme", "--account", "1", "--name", "Launch", "--subject", "Hi",
            "--body-file", "{tmp}/body.txt")
FILES = (("body.txt", "Hello {{ name }}\n"),)

register(Case("mail account add", st.tuples(nasty_text, nasty_text, number_text, nasty_text).map(
    lambda t: ["mail", "account", "add", t[0], "--tenant", "acme", "--imap-host", t[1], "--imap-port", t[2],
               "--folder", t[3], "--imap-password-env", "ERPQ_PROP_MAIL_PW"]), owner="mail"))
register(Case("mail account disable/enable", st.tuples(st.sampled_from(["disable", "enable"]), id_text).map(
    lambda t: ["mail", "account", t[0], t[1]]), setup=(ACCOUNT,), owner="mail"))
register(Case("mail emails", st.tuples(id_text, nasty_text, number_text).map(
    lambda t: ["mail", "emails", "--account", t[0], "--search", t[1], "--limit", t[2]]), owner="mail"))
register(Case("campaign create", st.tuples(id_text, nasty_text, nasty_text, number_text).map(
    lambda t: ["campaign", "create", "--tenant", "acme", "--account", t[0], "--name", t[1], "--subject", t[2],
               "--rate", t[3], "--body-file", "{tmp}/body.txt"]), setup=(ACCOUNT,), files=FILES, owner="mail"))
register(Case("campaign schedule", st.tuples(id_text, datetimes).map(
    lambda t: ["campaign", "schedule", t[0], "--at", t[1]]), setup=(ACCOUNT, CAMPAIGN), files=FILES,
    owner="mail"))
register(Case("campaign control", st.tuples(st.sampled_from(["send", "pause", "resume", "cancel", "status"]),
                                            id_text).map(lambda t: ["campaign", t[0], t[1]]), owner="mail"))
