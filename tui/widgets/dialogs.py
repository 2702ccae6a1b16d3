"""Modal screens: yes/no confirmation, typed confirmation, detail text (with the
actions a record offers), help."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Static


def question_lines(question: str, command: str | None) -> ComposeResult:
    """The question and the equivalent erpq command, as every confirmation shows them."""
    yield Static(question, id="question", markup=False)
    if command:
        yield Static(f"$ {command}", classes="command", markup=False)

class ConfirmScreen(ModalScreen[bool]):
    """Ask a yes/no question; ``y`` confirms, ``n`` or Escape declines."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, question: str, command: str | None = None) -> None:
        super().__init__()
        self.question = question
        self.command = command

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield from question_lines(self.question, self.command)
            yield Static("y: yes   n / Esc: no", classes="hint")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class TypedConfirmScreen(ModalScreen[bool]):
    """Confirm by typing a word (for flush); Escape declines."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="confirm.cancel")]

    def __init__(self, question: str, word: str, command: str | None = None) -> None:
        super().__init__()
        self.question = question
        self.word = word
        self.command = command

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield from question_lines(self.question, self.command)
            yield Static(f"Type '{self.word}' and press Enter (Esc cancels):", classes="hint", markup=False)
            yield Input(placeholder=self.word, id="typed")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value.strip() == self.word:
            self.dismiss(True)
        else:
            self.notify(f"type '{self.word}' exactly to confirm", severity="warning")
            self.query_one(Input).value = ""

    def action_cancel(self) -> None:
        self.dismiss(False)


class TextScreen(ModalScreen[None]):
    """Scrollable text (a job's detail, the help); Escape goes back."""

    BINDINGS = [Binding("escape,q", "close", "Back", id="text.close")]

    def __init__(self, title: str, body: str | Text) -> None:
        super().__init__()
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with Vertical(classes="panel"):
            yield Static(self.title_text, classes="panel-title", markup=False)
            with VerticalScroll(id="body"):
                yield Static(self.body, markup=False, id="body-text")
            yield Static("Esc: back   ↑↓ PgUp PgDn: scroll", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#body", VerticalScroll).focus()

    def action_close(self) -> None:
        self.dismiss(None)


class PromptScreen(ModalScreen[str | None]):
    """Ask for a line of text (a reason); Enter answers, Escape cancels (None)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt.cancel")]

    def __init__(self, question: str, default: str = "") -> None:
        super().__init__()
        self.question = question
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, id="question", markup=False)
            yield Static("Enter: go on   Esc: cancel", classes="hint")
            yield Input(value=self.default, id="prompt")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or self.default)

    def action_cancel(self) -> None:
        self.dismiss(None)


class DetailScreen(TextScreen):
    """A record's detail with the actions it offers (``actions``: name → callable).

    A key runs its action after the screen closes, exactly as the list's key
    would (same confirmation, same audit); keys of actions this record does not
    offer are disabled and not shown. The hint line names the keys in force.
    """

    BINDINGS = [
        Binding("r", "act('retry')", "Retry", id="detail.retry"),
        Binding("d", "act('forget')", "Forget", id="detail.forget"),
        Binding("f", "act('failed')", "Failed jobs", id="detail.failed"),
        Binding("c", "act('cancel')", "Cancel", id="detail.cancel"),
    ]

    def __init__(self, title: str, body: str | Text, actions: dict[str, Callable[[], None]] | None = None) -> None:
        super().__init__(title, body)
        self.offered = dict(actions or {})

    def hint(self) -> str:
        keys = [f"{self.app.key_label(b)}: {b.description.lower()}" for b in self.BINDINGS  # type: ignore[attr-defined]
                if self._offered(b.action)]
        return "   ".join([*keys, "Esc: back   ↑↓ PgUp PgDn: scroll"])

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(".hint", Static).update(Text(self.hint()))

    def _offered(self, action: str) -> bool:
        return action.removeprefix("act('").removesuffix("')") in self.offered

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "act":
            return bool(parameters) and parameters[0] in self.offered
        return True

    def action_act(self, name: str) -> None:
        run = self.offered.get(name)
        self.dismiss(None)
        if run is not None:
            # After the list screen is back and has its focus again: a drill-down
            # that switches views must not have its tab switched back by that.
            self.app.call_after_refresh(run)
