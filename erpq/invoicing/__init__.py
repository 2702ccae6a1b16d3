"""Recurring invoices: ``erp:generate-recurring-invoices``.

- ``capability``: the ``Capability`` object and the ``[invoicing]`` settings;
- ``models``: templates, invoices, invoice lines, number sequences;
- ``periods``: the calendar (which dates a template issues on);
- ``service``: money, numbering, the generator and the periodic task;
- ``ops``: ``ops.invoicing`` (templates, invoices, pause/resume, generate);
- ``cli``: ``erpq invoice``.
"""
