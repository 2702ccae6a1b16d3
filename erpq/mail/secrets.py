"""Account passwords, Fernet-encrypted at rest; the key comes from the environment or a key file."""

from __future__ import annotations

import os
from pathlib import Path


class MailKeyError(RuntimeError):
    """The key is missing or does not decrypt a password (one line, never the secret)."""


def _key(settings) -> bytes:
    value = os.environ.get(settings.key_env, "").strip()
    if value:
        return value.encode()
    if settings.key_file:
        path = Path(settings.key_file)
        try:
            return path.read_text().strip().encode()
        except OSError as exc:
            raise MailKeyError(f"mail key file {path}: {exc.strerror}") from None
    raise MailKeyError(f"no mail key: set {settings.key_env} or [mailing] key_file "
                       "(a Fernet key: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')")


def fernet(settings):
    from cryptography.fernet import Fernet

    try:
        return Fernet(_key(settings))
    except MailKeyError:
        raise
    except Exception:
        raise MailKeyError(f"the mail key in {settings.key_file or settings.key_env} is not a valid Fernet key") from None


def encrypt(settings, password: str) -> str:
    return fernet(settings).encrypt(password.encode()).decode()


def decrypt(settings, token: str | None, what: str) -> str:
    """The clear password; ``what`` names the account in the error ("account 3 (a@b) IMAP password")."""
    from cryptography.fernet import InvalidToken

    if not token:
        return ""
    f = fernet(settings)
    try:
        return f.decrypt(token.encode()).decode()
    except InvalidToken:
        raise MailKeyError(f"{what}: cannot be decrypted with the configured mail key (wrong key?)") from None
