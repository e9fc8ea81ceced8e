"""A keyed, virtual table for live data: the cursor follows an object, not a line number.

Rows are keyed (container id, incident id...). When rows arrive, change, move or vanish,
the cursor stays on the same key, so a key pressed on "web-1" acts on web-1 even if the
table re-sorted under it. Only the visible lines are rendered (10,000 incidents cost the
same to draw as 40), filtering and sorting work on the keys, and rows are replaced in
batches by the views (at most a few times per second), never one repaint per event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable

from rich.cells import cell_len
from rich.segment import Segment
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

RowKey = Hashable


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    min_width: int = 3
    max_width: int = 40
    flex: bool = False  # takes whatever width is left
    align: str = "left"  # "left" or "right"
    hide_below: int = 0  # hidden when the table is narrower than this (80-column terminals)


@dataclass(slots=True)
class Row:
    """One row. A cell is a rich Text, or a str that is ALREADY escaped (format.esc) and is
    styled with the matching entry of `styles`: plain strings keep 10,000 rows light, the
    Text objects are only made for the lines on screen."""

    key: RowKey
    cells: tuple[Text | str, ...]
    styles: tuple[str, ...] = ()
    sort: tuple[Any, ...] = ()  # one sortable value per column (defaults to the cell text)
    search: str = ""  # what `/` matches, lower case (defaults to the cells' text)
    host: str = ""  # the host's label in a fleet console (what `host:NAME` and `h` filter on)
    widths: tuple[int, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        plain = [c.plain if isinstance(c, Text) else c for c in self.cells]
        if not self.search:
            self.search = " ".join(plain).lower()
        self.widths = tuple(len(p) if p.isascii() else cell_len(p) for p in plain)

    def prefixed(self, key: RowKey, cell: str, style: str, sort: Any, search: str, host: str) -> "Row":
        """This row with one more (escaped, plain) cell first, without measuring the others again."""
        row = object.__new__(Row)
        row.key, row.host, row.search = key, host, search
        row.cells = (cell,) + self.cells
        row.styles = (style,) + self.styles + ("",) * (len(self.cells) - len(self.styles))
        own = self.sort if self.sort else tuple(c.plain if isinstance(c, Text) else c for c in self.cells)
        row.sort = (sort,) + tuple(own)
        row.widths = (len(cell) if cell.isascii() else cell_len(cell),) + self.widths
        return row

    def text(self, i: int) -> Text:
        value = self.cells[i]
        if isinstance(value, Text):
            return value.copy()
        return Text(value, style=self.styles[i] if i < len(self.styles) else "", end="")


def _sortable(value: Any) -> tuple[int, Any]:
    if value is None:
        return (2, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    if isinstance(value, Text):
        return (1, value.plain.lower())
    return (1, str(value).lower())


def split_filter(text: str) -> tuple[str, list[str]]:
    """`/host:node-2 wget` -> ("wget", ["node-2"]): the `host:` words, and what else to match."""
    if "host:" not in text.lower():
        return text.lower(), []
    words, hosts = [], []
    for word in text.lower().split():
        if word.startswith("host:"):
            hosts.append(word[5:])
        else:
            words.append(word)
    return " ".join(words), hosts


class LiveTable(ScrollView, can_focus=True):
    """Rows by key; `/` filter, column sort, and a cursor that sticks to its key."""

    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False, id="table.up"),
        Binding("down", "cursor(1)", "Down", show=False, id="table.down"),
        Binding("pageup", "page(-1)", "Page up", show=False, id="table.pageup"),
        Binding("pagedown", "page(1)", "Page down", show=False, id="table.pagedown"),
        Binding("home", "edge(0)", "First", show=False, id="table.home"),
        Binding("end", "edge(1)", "Last", show=False, id="table.end"),
        Binding("enter", "select", "Open", show=False, id="table.select"),
    ]
    COMPONENT_CLASSES = {"live-table--header", "live-table--cursor", "live-table--cursor-blurred",
                         "live-table--empty", "live-table--sorted"}
    DEFAULT_CSS = """
    LiveTable { background: $surface; height: 1fr; scrollbar-size-vertical: 1; overflow-x: hidden; }
    LiveTable > .live-table--header { text-style: bold; color: $text-accent; background: $panel; }
    LiveTable > .live-table--sorted { text-style: bold underline; color: $text-accent; background: $panel; }
    LiveTable > .live-table--cursor { background: $accent 50%; }
    LiveTable > .live-table--cursor-blurred { background: $accent 20%; }
    LiveTable > .live-table--empty { color: $text-muted; text-style: italic; }
    """

    class Highlighted(Message):
        def __init__(self, table: "LiveTable", key: RowKey | None) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> "LiveTable":
            return self.table

    class Selected(Message):
        def __init__(self, table: "LiveTable", key: RowKey) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> "LiveTable":
            return self.table

    def __init__(self, columns: list[Column], *, sort_column: str | None = None, sort_reverse: bool = False,
                 empty_text: str = "nothing here", sortable: bool = True, name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.columns = columns
        self.sort_column = sort_column
        self.sort_reverse = sort_reverse
        self.sortable = sortable
        self.empty_text = empty_text
        self.filter_text = ""
        self.host_only: str | None = None  # a fleet console's host filter (`h`), by label
        self.rows: dict[RowKey, Row] = {}
        self.order: list[RowKey] = []
        self._position: dict[RowKey, int] = {}
        self.cursor_key: RowKey | None = None
        # The row the user chose, if it vanished (an enforcer restart empties the lists for
        # a moment): the cursor returns to it when it comes back, unless the user moved on.
        self._wanted_key: RowKey | None = None
        self._cursor_index = 0
        self._widths: list[int] = [c.min_width for c in columns]
        self._strip_cache: dict[tuple[RowKey, bool], Strip] = {}
        self.rebuilds = 0  # how many times the order was recomputed (benchmarks and tests read it)

    # -- data in (method calls from the view) ------------------------------------------
    def set_rows(self, rows: Iterable[Row]) -> None:
        """Replace every row (keys that remain keep the cursor)."""
        self.rows = {row.key: row for row in rows}
        self._strip_cache.clear()
        self._rebuild()

    def upsert(self, rows: Iterable[Row], remove: Iterable[RowKey] = ()) -> None:
        """Add or replace some rows and drop others, in one rebuild."""
        for key in remove:
            self.rows.pop(key, None)
        for row in rows:
            self.rows[row.key] = row
            self._strip_cache.pop((row.key, True), None)
            self._strip_cache.pop((row.key, False), None)
        self._rebuild()

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        self._rebuild()

    def set_host_only(self, label: str | None) -> None:
        if label != self.host_only:
            self.host_only = label
            self._rebuild()

    def set_empty_text(self, text: str) -> None:
        if text != self.empty_text:
            self.empty_text = text
            self.refresh()

    def sort_by(self, column: str | None, reverse: bool | None = None) -> None:
        self.sort_column = column
        if reverse is not None:
            self.sort_reverse = reverse
        self._strip_cache.clear()
        self._rebuild()

    def cycle_sort(self) -> str:
        """Next column as the sort key; returns its label."""
        keys = [c.key for c in self.columns]
        i = keys.index(self.sort_column) + 1 if self.sort_column in keys else 0
        self.sort_by(keys[i % len(keys)])
        return self.columns[i % len(keys)].label

    def reverse_sort(self) -> None:
        self.sort_by(self.sort_column, not self.sort_reverse)

    # -- what the view asks --------------------------------------------------------------
    @property
    def row_count(self) -> int:
        return len(self.order)

    def visible_keys(self) -> list[RowKey]:
        return list(self.order)

    def move_cursor_to(self, key: RowKey) -> bool:
        if key not in self._position:
            return False
        self._wanted_key = None
        self._set_cursor(self._position[key])
        return True

    # -- order, widths, cursor -----------------------------------------------------------
    def _rebuild(self) -> None:
        self.rebuilds += 1
        needle, hosts = split_filter(self.filter_text)
        rows = [r for r in self.rows.values() if needle in r.search] if needle else list(self.rows.values())
        if hosts:  # `host:NAME` in the filter: rows of hosts whose label starts so
            rows = [r for r in rows if any(r.host.lower().startswith(h) for h in hosts)]
        if self.host_only is not None:
            rows = [r for r in rows if r.host == self.host_only]
        col_keys = [c.key for c in self.columns]
        if self.sortable and self.sort_column in col_keys:
            i = col_keys.index(self.sort_column)
            rows.sort(key=lambda r: _sortable(r.sort[i] if i < len(r.sort) else r.cells[i] if i < len(r.cells) else None),
                      reverse=self.sort_reverse)
        self.order = [r.key for r in rows]
        self._position = {k: i for i, k in enumerate(self.order)}
        self._compute_widths(rows)
        if self._wanted_key is not None and self._wanted_key in self._position:
            self.cursor_key, self._wanted_key = self._wanted_key, None
            self._cursor_index = self._position[self.cursor_key]
            self.post_message(self.Highlighted(self, self.cursor_key))
        elif self.cursor_key in self._position:
            self._cursor_index = self._position[self.cursor_key]
        else:
            if self.cursor_key is not None and self._wanted_key is None:
                self._wanted_key = self.cursor_key
            # The row under the cursor went away (removed or filtered out): stay at that height.
            self._cursor_index = min(self._cursor_index, max(0, len(self.order) - 1))
            new_key = self.order[self._cursor_index] if self.order else None
            if new_key != self.cursor_key:
                self.cursor_key = new_key
                self.post_message(self.Highlighted(self, new_key))
        self.virtual_size = Size(self._total_width(), len(self.order) + 1)
        self._scroll_to_cursor()
        self.refresh()

    def _compute_widths(self, rows: list[Row]) -> None:
        old = list(self._widths)
        for i, col in enumerate(self.columns):
            widest = len(col.label) + (2 if self.sortable else 0)
            for row in rows:
                if i < len(row.widths) and row.widths[i] > widest:
                    widest = row.widths[i]
                    if widest >= col.max_width:
                        break
            self._widths[i] = max(col.min_width, min(col.max_width, widest))
        if self._widths != old:
            self._strip_cache.clear()

    def _layout_widths(self) -> list[int]:
        """Column widths for the current size: flex columns share what is left."""
        width = max(1, self.scrollable_content_region.width)
        widths = [0 if c.hide_below and width < c.hide_below else w for c, w in zip(self.columns, self._widths)]
        gaps = sum(1 for w in widths if w) - 1
        flex = [i for i, c in enumerate(self.columns) if c.flex and widths[i]]
        used = sum(w for i, w in enumerate(widths) if i not in flex) + gaps
        if flex:
            room = max(0, width - used)
            natural = [widths[i] for i in flex]
            if sum(natural) <= room:
                # Each flex column gets what its content needs; the last one takes the rest.
                widths[flex[-1]] += room - sum(natural)
            else:
                total = sum(natural) or 1
                for i, want in zip(flex, natural):
                    widths[i] = max(self.columns[i].min_width, room * want // total)
        return widths

    def _total_width(self) -> int:
        return max(1, self.scrollable_content_region.width)

    def _set_cursor(self, index: int) -> None:
        if not self.order:
            return
        index = max(0, min(index, len(self.order) - 1))
        old_key = self.cursor_key
        self._cursor_index = index
        self.cursor_key = self.order[index]
        self._scroll_to_cursor()
        self.refresh()
        if self.cursor_key != old_key:
            self.post_message(self.Highlighted(self, self.cursor_key))

    def _scroll_to_cursor(self) -> None:
        visible = max(1, self.scrollable_content_region.height - 1)
        top = round(self.scroll_y)
        if self._cursor_index < top:
            self.scroll_to(y=self._cursor_index, animate=False, immediate=True)
        elif self._cursor_index >= top + visible:
            self.scroll_to(y=self._cursor_index - visible + 1, animate=False, immediate=True)

    # -- keys and mouse --------------------------------------------------------------------
    def action_cursor(self, delta: int) -> None:
        self._wanted_key = None
        self._set_cursor(self._cursor_index + delta)

    def action_page(self, direction: int) -> None:
        self._wanted_key = None
        self._set_cursor(self._cursor_index + direction * max(1, self.scrollable_content_region.height - 2))

    def action_edge(self, end: int) -> None:
        self._wanted_key = None
        self._set_cursor(len(self.order) - 1 if end else 0)

    def action_select(self) -> None:
        if self.cursor_key is not None and self.order:
            self.post_message(self.Selected(self, self.cursor_key))

    def on_click(self, event: events.Click) -> None:
        if event.y == 0:
            if self.sortable:
                column = self._column_at(event.x)
                if column is not None:
                    if column == self.sort_column:
                        self.reverse_sort()
                    else:
                        self.sort_by(column)
            return
        index = round(self.scroll_y) + event.y - 1
        if 0 <= index < len(self.order):
            self._wanted_key = None
            self._set_cursor(index)
            if event.chain >= 2:
                self.action_select()

    def _column_at(self, x: int) -> str | None:
        pos = 0
        for col, width in zip(self.columns, self._layout_widths()):
            if not width:
                continue
            if pos <= x < pos + width + 1:
                return col.key
            pos += width + 1
        return None

    def on_resize(self, event: events.Resize) -> None:
        self._strip_cache.clear()
        self.virtual_size = Size(self._total_width(), len(self.order) + 1)

    def on_focus(self) -> None:
        self._strip_cache.clear()
        self.refresh()

    def on_blur(self) -> None:
        self._strip_cache.clear()
        self.refresh()

    # -- drawing -------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            return self._render_header(width)
        if not self.order:
            if y == 1:
                style = self.get_component_rich_style("live-table--empty")
                message = self.empty_text
                if self.filter_text and self.rows:
                    message = f"no row matches /{self.filter_text}"
                elif self.host_only is not None and self.rows:
                    message = f"nothing here from host {self.host_only} (h: next host)"
                text = Text(" " + message, style=style, end="")
                return Strip(list(text.render(self.app.console))).adjust_cell_length(width, base)
            return Strip.blank(width, base)
        index = round(self.scroll_y) + y - 1
        if index >= len(self.order):
            return Strip.blank(width, base)
        key = self.order[index]
        is_cursor = index == self._cursor_index
        cached = self._strip_cache.get((key, is_cursor))
        if cached is not None and cached.cell_length == width:
            return cached
        strip = self._render_row(self.rows[key], width, is_cursor)
        if len(self._strip_cache) > 4096:
            self._strip_cache.clear()
        self._strip_cache[(key, is_cursor)] = strip
        return strip

    def _line(self, cells: Iterable[Text], widths: list[int]) -> Text:
        line = Text(end="", no_wrap=True, overflow="ellipsis")
        first = True
        for piece, col, w in zip(cells, self.columns, widths):
            if not w:
                continue  # hidden at this width
            if not first:
                line.append(" ")
            first = False
            piece.no_wrap = True
            if piece.cell_len > w:
                piece.truncate(w, overflow="ellipsis")
            pad = w - piece.cell_len
            if col.align == "right":
                line.append(" " * pad)
                line.append_text(piece)
            else:
                line.append_text(piece)
                line.append(" " * pad)
        return line

    def _render_header(self, width: int) -> Strip:
        style = self.get_component_rich_style("live-table--header")
        sorted_style = self.get_component_rich_style("live-table--sorted")
        labels = []
        for col in self.columns:
            label = col.label
            if self.sortable and col.key == self.sort_column:
                labels.append(Text(label + ("▼" if self.sort_reverse else "▲"), style=sorted_style))
            else:
                labels.append(Text(label, style=style))
        line = self._line(labels, self._layout_widths())
        return Strip(list(line.render(self.app.console))).adjust_cell_length(width, style)

    def _render_row(self, row: Row, width: int, is_cursor: bool) -> Strip:
        line = self._line((row.text(i) for i in range(len(row.cells))), self._layout_widths())
        segments = list(line.render(self.app.console))
        base = self.rich_style
        if is_cursor:
            cursor = self.get_component_rich_style(
                "live-table--cursor" if self.has_focus else "live-table--cursor-blurred")
            base = base + cursor
            segments = list(Segment.apply_style(segments, base))
            return Strip(segments).adjust_cell_length(width, base)
        return Strip(list(Segment.apply_style(segments, base))).adjust_cell_length(width, base)

