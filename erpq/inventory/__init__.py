"""Inventory: products, suppliers, reorder rules and ``erp:check-reorder-rules``.

- ``capability``: the ``Capability`` object and the ``[inventory]`` settings;
- ``models``: products, suppliers, reorder rules, purchase orders and their lines;
- ``service``: the reorder check and the periodic task;
- ``ops``: ``ops.inventory``; ``cli``: ``erpq inventory``.
"""
