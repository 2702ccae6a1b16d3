"""Modal screens: yes/no confirmation, typed confirmation, detail text, help."""

from __future__ import annotations

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
