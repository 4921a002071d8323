"""Where ``kvmss lab`` prints: lines that stay, and on a terminal a live area
under them that is redrawn in place (the upgrade's picture, refreshed every
second). Off a terminal (a pipe, a log, a test) the live area is not drawn;
the callers print change lines instead.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import TextIO

from kvmss.client.tables import one_line

# ESC [ n F: cursor to the start of the line n lines up; ESC [ J: clear below.
_UP = "\x1b[{n}F"
_CLEAR_BELOW = "\x1b[J"


class Screen:
    def __init__(
        self, stream: TextIO, *, tty: bool | None = None, width: int | None = None
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self._width = width
        self._live: list[str] = []

    def width(self) -> int:
        if self._width is not None:
            return self._width
        return max(40, shutil.get_terminal_size((100, 24)).columns)

    def _fit(self, text: str) -> str:
        """One terminal row: longer lines would wrap and break the redraw."""
        text = one_line(text)
        limit = self.width() - 1
        return text if len(text) <= limit else text[: limit - 1] + "~"

    def _erase_live(self) -> None:
        if self._live:
            self.stream.write(_UP.format(n=len(self._live)) + _CLEAR_BELOW)
            self._live = []

    def _draw_live(self, lines: Sequence[str]) -> None:
        self._live = [self._fit(x) for x in lines]
        for line in self._live:
            self.stream.write(line + "\n")

    def say(self, text: str = "") -> None:
        """Print ``text`` (lines) to stay, above the live area."""
        live = self._live
        if self.tty:
            self._erase_live()
        self.stream.write(text + "\n")
        if self.tty and live:
            self._draw_live(live)
        self.stream.flush()

    def live(self, lines: Sequence[str]) -> None:
        """Replace the live area with ``lines`` (a terminal only)."""
        if not self.tty:
            return
        self._erase_live()
        self._draw_live(lines)
        self.stream.flush()

    def settle(self) -> None:
        """Leave the live area on screen as it is; the next :meth:`live` starts a new one."""
        self._live = []
        self.stream.flush()

    def clear_live(self) -> None:
        """Remove the live area from the screen."""
        if self.tty:
            self._erase_live()
            self.stream.flush()
