"""A terminal table of sensor readings, redrawn in place: the face of ``roost-sim demo``.

``render()`` turns readings into text (one row per value, a row with the fault for a sensor that failed,
a trend arrow against the previous round); :class:`LiveTable` redraws it in place on a terminal and
prints plain successive tables when the output is a file or a pipe. Readings are ``hal.sensors.Reading``
objects or their ``to_dict()`` form, so the table serves anything that carries readings (the agent's
telemetry too).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

_CLEAR_HOME = "\x1b[H\x1b[2J"
_RED = "\x1b[31m"
_DIM = "\x1b[2m"
_RESET = "\x1b[0m"
HEADERS = ("SENSOR", "CHIP", "QUANTITY", "VALUE", "UNIT", "")


def _field(reading: Any, name: str) -> Any:
    if isinstance(reading, Mapping):
        return reading.get(name)
    return getattr(reading, name, None)


def format_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    magnitude = abs(value)
    digits = 1 if magnitude >= 1000 else 2 if magnitude >= 10 else 3
    return f"{value:.{digits}f}"


def _trend(value: Any, before: Any) -> str:
    if not isinstance(value, (int, float)) or not isinstance(before, (int, float)) or value == before:
        return " "
    return "\u2191" if value > before else "\u2193"


def rows(readings: Iterable[Any], previous: Mapping[tuple[str, str], Any] | None = None) -> list[tuple[str, ...]]:
    """Table rows: (sensor, chip, quantity, value, unit, trend or fault marker)."""
    out: list[tuple[str, ...]] = []
    previous = previous or {}
    for reading in readings:
        sensor = str(_field(reading, "sensor_id"))
        chip = str(_field(reading, "chip") or "")
        error = _field(reading, "error")
        if error:
            kind = _field(reading, "error_kind") or "error"
            out.append((sensor, chip, "FAULT", kind, "", str(error)))
            continue
        units = _field(reading, "units") or {}
        values = _field(reading, "values") or {}
        first = True
        for name, value in values.items():
            trend = _trend(value, previous.get((sensor, name)))
            out.append((sensor if first else "", chip if first else "", name, format_value(value),
                        units.get(name, ""), trend))
            first = False
    return out


def render(readings: Iterable[Any], *, title: str = "", footer: str = "", color: bool = False,
           previous: Mapping[tuple[str, str], Any] | None = None) -> str:
    """The whole table as text, values right-aligned, faults in red when ``color``."""
    table = rows(readings, previous)
    widths = [len(h) for h in HEADERS[:-1]]
    for row in table:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(cell))
    lines = []
    if title:
        lines.append(title)
    header = "  ".join(h.ljust(w) for h, w in zip(HEADERS[:-1], widths, strict=True)).rstrip()
    lines.append(f"{_DIM}{header}{_RESET}" if color else header)
    for row in table:
        sensor, chip, quantity, value, unit, extra = row
        cells = [sensor.ljust(widths[0]), chip.ljust(widths[1]), quantity.ljust(widths[2]),
                 value.rjust(widths[3]) if quantity != "FAULT" else value.ljust(widths[3]), unit.ljust(widths[4])]
        line = "  ".join(cells) + " " + extra
        if quantity == "FAULT" and color:
            line = f"{_RED}{line}{_RESET}"
        lines.append(line.rstrip())
    if footer:
        lines.append(footer)
    return "\n".join(lines) + "\n"


def remember(readings: Iterable[Any]) -> dict[tuple[str, str], Any]:
    """The values of this round, keyed for ``previous=`` in the next one."""
    memory: dict[tuple[str, str], Any] = {}
    for reading in readings:
        for name, value in (_field(reading, "values") or {}).items():
            memory[(str(_field(reading, "sensor_id")), name)] = value
    return memory


class LiveTable:
    """Shows successive tables: redrawn in place on a terminal, one after another otherwise."""

    def __init__(self, stream: TextIO, *, color: bool | None = None, redraw: bool | None = None) -> None:
        self.stream = stream
        tty = bool(getattr(stream, "isatty", lambda: False)())
        self.redraw = tty if redraw is None else redraw
        # NO_COLOR (https://no-color.org) turns colour off whatever the terminal can do.
        self.color = (tty and "NO_COLOR" not in os.environ) if color is None else color
        self._previous: dict[tuple[str, str], Any] = {}
        self.frames = 0

    def show(self, readings: list[Any], *, title: str = "", footer: str = "") -> str:
        text = render(readings, title=title, footer=footer, color=self.color, previous=self._previous)
        self._previous = remember(readings)
        if self.redraw:
            self.stream.write(_CLEAR_HOME + text)
        else:
            self.stream.write(("\n" if self.frames else "") + text)
        self.stream.flush()
        self.frames += 1
        return text


def clock_title(board_name: str, wall: float, extra: str = "") -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))
    return f"roost emulated board {board_name}  {stamp}" + (f"  {extra}" if extra else "")
