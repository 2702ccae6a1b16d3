"""erpq: background work and an operations console for a multi-tenant CRM/ERP."""

__version__ = "0.1.0"
