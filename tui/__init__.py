"""erpq-console: the Textual operations console. It talks to ``erpq.ops`` only."""
