"""The mail capability: email accounts synced over IMAP, email campaigns sent over SMTP."""
