"""Dialogs: confirm an action (focus on Cancel), type a value, pick one of a few, and help."""

from __future__ import annotations

from typing import Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, OptionList, Static
from textual.widgets.option_list import Option


class ConfirmScreen(ModalScreen[bool]):
    """Says exactly what will happen; Cancel has the focus, Esc cancels."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="confirm.cancel"),
        Binding("left", "app.focus_previous", show=False, id="confirm.left"),
        Binding("right", "app.focus_next", show=False, id="confirm.right"),
    ]
    AUTO_FOCUS = "#cancel"

    def __init__(self, title: str, lines: Iterable[Text], confirm_label: str, request: Text | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.lines = list(lines)
        self.confirm_label = confirm_label
        self.request = request

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Static(Text(self.title_text, style="bold"), classes="dialog-title")
            body = Text(end="")
            for i, line in enumerate(self.lines):
                if i:
                    body.append("\n")
                body.append_text(line)
            yield Static(body, classes="dialog-body")
            if self.request is not None:
                yield Static(Text("request: ", style="dim").append_text(self.request), classes="dialog-request")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel", variant="primary")
                yield Button(self.confirm_label, id="confirm", variant="error")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm")

    def action_cancel(self) -> None:
        self.dismiss(False)


class PromptScreen(ModalScreen[str | None]):
    """One line of input (a peer to block); Enter accepts, Esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt.cancel")]

    def __init__(self, title: str, explanation: Text, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.explanation = explanation
        self.value = value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Static(Text(self.title_text, style="bold"), classes="dialog-title")
            yield Static(self.explanation, classes="dialog-body")
            yield Input(value=self.value, placeholder=self.placeholder, id="prompt-input")
            yield Static(Text("Enter: next   Esc: cancel", style="dim"), classes="dialog-request")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        value = event.value.strip()
        self.dismiss(value or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ChoiceScreen(ModalScreen[str | None]):
    """Pick one option (a mode, a scope); Enter picks, Esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="choice.cancel")]

    def __init__(self, title: str, explanation: Text, options: list[tuple[str, Text | str]],
                 highlighted: str | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.explanation = explanation
        self.options = options
        self.highlighted = highlighted

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Static(Text(self.title_text, style="bold"), classes="dialog-title")
            yield Static(self.explanation, classes="dialog-body")
            yield OptionList(*(Option(label, id=value) for value, label in self.options), id="choices")
            yield Static(Text("↑↓ choose   Enter: next   Esc: cancel", style="dim"), classes="dialog-request")

    def on_mount(self) -> None:
        options = self.query_one("#choices", OptionList)
        ids = [value for value, _ in self.options]
        if self.highlighted in ids:
            options.highlighted = ids.index(self.highlighted)
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """Every key of the current screen and view, and the `:` commands."""

    BINDINGS = [
        Binding("escape", "close", "Close", id="help.close"),
        Binding("question_mark", "close", show=False, id="help.close2"),
        Binding("q", "close", show=False, id="help.close3"),
    ]

    def __init__(self, sections: list[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        text = Text(end="")
        for i, (title, keys) in enumerate(self.sections):
            if i:
                text.append("\n")
            text.append(title + "\n", style="bold underline")
            for key, description in keys:
                text.append(f"  {key:<12}", style="bold")
                text.append(description + "\n")
        with Vertical(id="dialog", classes="dialog help"):
            yield Static(Text("Keys (Esc closes)", style="bold"), classes="dialog-title")
            with VerticalScroll():
                yield Static(text)

    def action_close(self) -> None:
        self.dismiss(None)
