"""erp:check-system-health (filled in below)."""
