"""The bottom line for `:` commands (switch view, with completion) and `/` filters (live)."""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.suggester import Suggester
from textual.widget import Widget
from textual.widgets import Input

VIEW_NAMES = ("apps", "containers", "alerts", "feeds", "audit")
ALIASES = {"ctr": "containers", "co": "containers", "ps": "containers", "inc": "alerts",
           "incidents": "alerts", "topology": "apps", "app": "apps", "feed": "feeds", "log": "audit"}
COMMANDS = VIEW_NAMES + ("help", "quit")


def resolve_command(text: str) -> tuple[str | None, list[str]]:
    """`co` -> ("containers", []); `alerts sev=high` -> ("alerts", ["sev=high"]); unknown -> (None, ...)."""
    words = text.strip().split()
    if not words:
        return None, []
    head, rest = words[0].lower(), words[1:]
    if head in ALIASES:
        return ALIASES[head], rest
    if head in COMMANDS:
        return head, rest
    if head == "q":
        return "quit", rest
    matches = [c for c in COMMANDS if c.startswith(head)]
    return (matches[0] if len(matches) == 1 else None), rest


class CommandSuggester(Suggester):
    """Completes the first word to a view or command name (Tab or → accepts it)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=False)
        self.bar: "CommandBar | None" = None

    def bar_mode(self) -> str:
        return self.bar.mode if self.bar is not None else "command"

    async def get_suggestion(self, value: str) -> str | None:
        if not value or " " in value or self.bar_mode() != "command":
            return None
        for name in COMMANDS:
            if name.startswith(value.lower()):
                return name
        return None


class CommandBar(Input):
    """Hidden until `:` or `/`. Posts Command, FilterChanged and Closed messages up."""

    BINDINGS = [
        Binding("tab", "complete", "Complete", priority=True, id="command.complete"),
        Binding("escape", "cancel", "Cancel", id="command.cancel"),
    ]
    DEFAULT_CSS = """
    CommandBar, CommandBar:focus { border: none; height: 1; padding: 0 1; width: 1fr; }
    """

    class Command(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class FilterChanged(Message):
        def __init__(self, text: str, done: bool = False) -> None:
            super().__init__()
            self.text = text
            self.done = done

    class Closed(Message):
        def __init__(self, mode: str, cancelled: bool) -> None:
            super().__init__()
            self.mode = mode
            self.cancelled = cancelled

    def __init__(self, id: str | None = None) -> None:
        suggester = CommandSuggester()
        super().__init__(id=id, suggester=suggester, select_on_focus=False)
        suggester.bar = self
        self.mode = "command"
        self._return_to: Widget | None = None

    def open(self, mode: str, value: str = "", return_to: Widget | None = None) -> None:
        self.mode = mode
        self._return_to = return_to
        self.placeholder = "view: apps containers alerts feeds audit (Tab completes)" if mode == "command" \
            else "filter the table (Enter keeps it, Esc clears it)"
        self.value = value
        if self.parent is not None:
            self.parent.display = True
            prompt = self.parent.query("#command-prompt")
            if prompt:
                prompt.first().update(":" if mode == "command" else "/")  # type: ignore[attr-defined]
        # Focus now, not after a refresh: keys typed fast (or pasted) right after `/` must
        # land in this line, not in the table under it.
        self.screen.set_focus(self)
        self.cursor_position = len(value)

    def close(self) -> None:
        if self.parent is not None:
            self.parent.display = False
        if self._return_to is not None and self._return_to.is_mounted:
            self.screen.set_focus(self._return_to)  # at once: the next key goes there

    @property
    def is_open(self) -> bool:
        return bool(self.parent is not None and self.parent.display)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "complete":
            return self.mode == "command"
        return True

    def action_complete(self) -> None:
        if self.mode == "command" and self._suggestion:
            self.value = self._suggestion
            self.cursor_position = len(self.value)

    def action_cancel(self) -> None:
        mode = self.mode
        self.close()
        if mode == "filter":
            self.post_message(self.FilterChanged("", done=True))
        self.post_message(self.Closed(mode, cancelled=True))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if self.mode == "filter" and self.is_open:
            self.post_message(self.FilterChanged(event.value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        mode = self.mode
        self.close()
        if mode == "filter":
            self.post_message(self.FilterChanged(event.value, done=True))
        else:
            self.post_message(self.Command(event.value))
        self.post_message(self.Closed(mode, cancelled=False))
