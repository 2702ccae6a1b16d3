from __future__ import annotations

from dataclasses import dataclass

from erpq.capability import Capability, PanelAction, PanelSpec


@dataclass
class GreetSettings:
    greeting: str = "hello"

    def validate(self, err) -> None:
        if not self.greeting.strip():
            raise err("greeting", "must not be empty")


CAPABILITY = Capability(
    "greet",
    title="Greetings",
    modules=("capfixture.jobs",),
    settings=GreetSettings,
    cli="capfixture.jobs:register",
    ops="capfixture.jobs:GreetOps",
    events=("greeting.sent",),
    panels=(PanelSpec("greetings", "Greetings", read="greetings",
                      columns=(("id", "Id", 6), ("text", "Text", None)),
                      actions=(PanelAction("x", "Forget", "forget", "Forget greeting {id}?"),)),),
)
