"""kvmss.client.screen: a live area redrawn in place on a terminal, only
what is said elsewhere."""

from __future__ import annotations

import io

from kvmss.client.screen import Screen


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_screen_redraws_the_live_area_in_place_on_a_terminal() -> None:
    out = Tty()
    s = Screen(out, width=30)
    s.live(["a", "b"])
    s.live(["c"])
    s.say("kept")
    s.live(["x" * 50])
    text = out.getvalue()
    assert text.startswith("a\nb\n\x1b[2F\x1b[Jc\n")
    # a line said while a live area is shown goes above it, the area is redrawn
    assert "\x1b[1F\x1b[Jkept\nc\n" in text
    # rows are cut to the terminal's width so the redraw never wraps
    assert text.endswith("\x1b[1F\x1b[J" + "x" * 28 + "~\n")


def test_screen_off_a_terminal_prints_only_what_is_said() -> None:
    out = io.StringIO()
    s = Screen(out)
    s.live(["a"])
    s.say("kept")
    s.clear_live()
    assert out.getvalue() == "kept\n"
