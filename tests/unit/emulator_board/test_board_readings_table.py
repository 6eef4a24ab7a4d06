"""The readings table: rows, faults, trends, live redraw vs. plain output."""

from __future__ import annotations

import io

from emulator.board.readings_table import LiveTable, format_value, remember, render, rows
from hal.sensors import Reading


def reading(sensor_id: str, chip: str, values: dict, units: dict, error: str | None = None,
            kind: str | None = None) -> Reading:
    return Reading(sensor_id, chip.lower(), chip, values, units, 1.0, error, kind)


GOOD = reading("climate", "BME280", {"temperature": 21.456, "pressure": 101325.25}, {"temperature": "degC",
                                                                                     "pressure": "Pa"})
BAD = reading("humidity", "SHT4x", {}, {"temperature": "degC"}, "CRCError: CRC mismatch", "crc")


def test_rows_one_per_value_and_one_per_fault() -> None:
    assert rows([GOOD, BAD]) == [
        ("climate", "BME280", "temperature", "21.46", "degC", " "),
        ("", "", "pressure", "101325.2", "Pa", " "),
        ("humidity", "SHT4x", "FAULT", "crc", "", "CRCError: CRC mismatch"),
    ]


def test_rows_accept_dicts_and_show_trends() -> None:
    previous = remember([GOOD])
    warmer = reading("climate", "BME280", {"temperature": 22.0, "pressure": 101325.25},
                     {"temperature": "degC", "pressure": "Pa"}).to_dict()
    assert [r[5] for r in rows([warmer], previous)] == ["\u2191", " "]


def test_format_value() -> None:
    assert [format_value(v) for v in (3, 0.12345, 12.345, 1234.56, True, "x")] == [
        "3", "0.123", "12.35", "1234.6", "True", "x"]


def test_render_aligns_columns_and_colours_faults() -> None:
    text = render([GOOD, BAD], title="board", footer="faults: humidity=bad_crc")
    lines = text.splitlines()
    assert lines[0] == "board" and lines[-1] == "faults: humidity=bad_crc"
    assert lines[1].split() == ["SENSOR", "CHIP", "QUANTITY", "VALUE", "UNIT"]
    assert lines[2].index("21.46") + len("21.46") == lines[3].index("101325.2") + len("101325.2")
    assert "\x1b[31m" not in text
    assert "\x1b[31m" in render([BAD], color=True)


def test_live_table_redraws_only_on_a_terminal() -> None:
    plain = io.StringIO()
    table = LiveTable(plain)
    table.show([GOOD])
    table.show([GOOD])
    assert "\x1b[" not in plain.getvalue() and plain.getvalue().count("SENSOR") == 2
    screen = io.StringIO()
    LiveTable(screen, redraw=True, color=False).show([GOOD])
    assert screen.getvalue().startswith("\x1b[H\x1b[2J")
