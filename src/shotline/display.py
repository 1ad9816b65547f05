"""Live progress of a render: one line per shot plus the stitch.

On a terminal it is a Rich live table redrawn in place; otherwise (CI, pipes, logs) each
state change is one plain line on stderr, so output stays greppable. Messages carry
vendors' words: they are shown as text, never read as Rich markup.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .core.planner import Plan
from .core.takes import extras, slot_owner

if TYPE_CHECKING:  # the renderer pulls in the media stack; a display needs only the type
    from .engine.renderer import ShotEvent

STYLE = {"done": "green", "cached": "cyan", "failed": "red", "stitched": "green"}


class RenderDisplay:
    """A listener for :class:`ShotEvent` that shows every shot's state."""

    def __init__(self, plan: Plan, console: Console) -> None:
        self.plan = plan
        self.console = console
        self.rows: dict[int, tuple[str, str]] = {s.index: ("queued", "") for s in plan.shots}
        self.rows[-1] = ("waiting", "")
        self.live: Live | None = None

    def __enter__(self) -> RenderDisplay:
        if self.console.is_terminal:
            self.live = Live(self._table(), console=self.console, refresh_per_second=8)
            self.live.__enter__()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.live:
            self.live.update(self._table())
            self.live.__exit__(et, ev, tb)

    def __call__(self, event: ShotEvent) -> None:
        detail = f"{event.progress:.0%}" if event.progress is not None else event.message
        changed = self.rows.get(event.index, ("", ""))[0] != event.state
        self.rows[event.index] = (event.state, detail)
        if self.live:
            self.live.update(self._table())
        elif changed or event.message:
            name = self._name(event.index)
            self.console.print(f"{name}: {event.state} {detail}".rstrip(), highlight=False,
                               markup=False)

    def _name(self, index: int) -> str:
        """How a person knows a slot: a shot's number, and for a take not picked its take."""
        if index < 0:
            return "stitch"
        n = len(self.plan.shots)
        if index < n:
            return f"shot {index + 1}"
        return f"shot {slot_owner(self.plan, index) + 1} take {extras(self.plan)[index - n].take}"

    def _table(self) -> Table:
        table = Table(show_header=True, title=Text(f"{self.plan.model} · {self.plan.seconds:g} s"),
                      title_justify="left")
        for col in ("shot", "call", "state", "detail"):
            table.add_column(col, overflow="fold")
        for shot in self.plan.shots:
            state, detail = self.rows[shot.index]
            table.add_row(str(shot.index + 1), f"{shot.seconds}s",
                          Text(state, style=STYLE.get(state, "yellow")), Text(detail))
        state, detail = self.rows[-1]
        table.add_row("stitch", "", Text(state, style=STYLE.get(state, "yellow")), Text(detail))
        return table
