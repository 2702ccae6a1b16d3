"""The mail capability: email accounts synced over IMAP (``crm:sync-email-accounts``)
and email campaigns sent over SMTP (``SendEmailCampaignJob``).

Its settings are the ``[mailing]`` section (``[mail]`` is the core's shared
SMTP sender).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..capability import Capability, PanelAction, PanelSpec


@dataclass
class MailingSettings:
    """``[mailing]``: the password key, sync limits and back-off, campaign sending rate."""

    #: Environment variable holding the Fernet key that encrypts account passwords ...
    key_env: str = "ERPQ_MAIL_KEY"
    #: ... or a file holding it (used when the variable is unset).
    key_file: str = ""
    #: Accounts synced at the same time (one job each).
    sync_parallel: int = 4
    #: Messages per fetch batch, and bytes per batch (a big message is fetched alone).
    fetch_batch: int = 200
    fetch_batch_bytes: int = 16 * 1024 * 1024
    timeout_s: float = 30.0
    #: After this many consecutive failed syncs an account is backed off ...
    backoff_after_failures: int = 3
    #: ... for this long, doubling with every further failure, up to backoff_max_s.
    backoff_s: int = 900
    backoff_max_s: int = 6 * 3600
    #: Campaign sending rate (messages per minute per campaign; 0: as fast as the server takes them).
    rate_per_minute: int = 600
    #: Messages per SMTP connection before it is reopened.
    smtp_batch: int = 500
    #: Delays before retrying a recipient the server answered 4xx, in seconds.
    retry_delays_s: list[float] = field(default_factory=lambda: [60, 300, 1800])
    #: Delays before retrying a campaign whose SMTP server could not be reached (the last one repeats).
    server_retry_s: list[float] = field(default_factory=lambda: [30, 120, 600, 1800])
    #: List-Unsubscribe URL ("{campaign}", "{email}" and "{token}" are filled in); empty: mailto only.
    unsubscribe_url: str = ""

    def validate(self, err) -> None:
        if self.sync_parallel < 1:
            raise err("sync_parallel", "must be at least 1")
        if self.fetch_batch < 1 or self.fetch_batch_bytes < 1024:
            raise err("fetch_batch", "must be at least 1 (and fetch_batch_bytes at least 1024)")
        if self.timeout_s <= 0:
            raise err("timeout_s", "must be positive")
        if self.rate_per_minute < 0:
            raise err("rate_per_minute", "must be >= 0")
        if self.backoff_after_failures < 1:
            raise err("backoff_after_failures", "must be at least 1")
        if any(d < 0 for d in self.retry_delays_s):
            raise err("retry_delays_s", "must be seconds >= 0")
        if not self.server_retry_s or any(d <= 0 for d in self.server_retry_s):
            raise err("server_retry_s", "must be a non-empty list of seconds > 0")


CAPABILITY = Capability(
    "mail",
    title="Mail",
    description="Email accounts synced over IMAP and linked to contacts/leads; email campaigns sent over SMTP",
    modules=("erpq.mail.sync", "erpq.mail.campaigns"),
    settings=MailingSettings,
    settings_key="mailing",
    cli="erpq.mail.cli:register",
    ops="erpq.mail.ops:MailOps",
    events=(),
    panels=(
        PanelSpec("mail-accounts", "Mail accounts", read="accounts_page",
                  columns=(("id", "Id", 5), ("tenant", "Tenant", 10), ("email", "Address", 28),
                           ("is_active", "Active", 6), ("last_synced_at", "Last sync", 19),
                           ("messages", "Messages", 8), ("backoff", "Backoff", 20), ("last_error", "Last error", None)),
                  actions=(PanelAction("s", "Sync now", "sync_account", "Sync account {id} now?"),)),
        PanelSpec("mail-campaigns", "Campaigns", read="campaigns_page",
                  columns=(("id", "Id", 5), ("name", "Name", 20), ("status", "Status", 9),
                           ("progress", "Progress", 9), ("rate_per_minute", "Rate/min", 8), ("eta", "ETA", 19),
                           ("counts", "Recipients", 40), ("error", "Last error", None)),
                  actions=(PanelAction("p", "Pause", "pause", "Pause campaign {id}?"),
                           PanelAction("u", "Resume", "resume", "Resume campaign {id}?"),
                           PanelAction("x", "Cancel", "cancel", "Cancel campaign {id}?"))),
    ),
    models="erpq.mail.models",
    migrations="migrations/versions",
)
