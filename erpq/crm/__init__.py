"""CRM: leads, contacts, deals, activities, notifications, reminders, deal
notifications and the workflow engine.

- ``capability``: the ``Capability`` object and the ``[crm]`` settings;
- ``models``: the CRM tables (migrations in ``migrations/``, branch ``crm``);
- ``service``: records and their events, notifications (plain functions on a session);
- ``mail``: sending a mail at most once per Message-ID through ``erpq.mailer``;
- ``reminders``: ``crm:check-activity-reminders`` and ``SendActivityReminderJob``;
- ``deals``: ``SendDealNotificationJob`` on ``deal.status_changed``;
- ``workflows``: definitions, conditions, ``WorkflowEngine`` and ``ExecuteWorkflowJob``;
- ``ops`` / ``cli``: ``ops.crm`` and ``erpq lead|contact|deal|activity|notifications|workflow``.
"""
