"""``erpq workflow ...`` (being written)."""


def register_workflow(groups, common) -> None:
    return None
