"""`roost-sim demo`: a few rounds of the live table on the emulated board."""

from __future__ import annotations

import argparse
import io
import random

from emulator.board.platform import EmulatedPlatform
from emulator.commands.demo import Chaos, run
from hal.board import load_board


def args(**overrides) -> argparse.Namespace:
    values = {"board": "rpi-4b", "interval": 0.01, "count": 2, "seed": 3, "faults": "", "chaos": False}
    values.update(overrides)
    return argparse.Namespace(**values)


def test_demo_prints_a_table_per_round(monkeypatch) -> None:
    monkeypatch.delenv("ROOST_EMULATOR_FAULTS", raising=False)
    out = io.StringIO()
    assert run(args(faults="climate=nack"), out) == 0
    text = out.getvalue()
    assert text.count("SENSOR") == 2
    assert "FAULT" in text and "faults: climate=nack" in text
    for name in ("humidity", "analog", "particles"):
        assert name in text


def test_demo_refuses_bad_input(capsys) -> None:
    assert run(args(board="rpi-9")) == 2
    assert "no board called 'rpi-9'" in capsys.readouterr().err
    assert run(args(faults="climate=melted")) == 2
    assert "unknown kind 'melted'" in capsys.readouterr().err
    assert run(args(interval=0)) == 2


def test_chaos_breaks_one_sensor_at_a_time_and_mends_it() -> None:
    board = load_board("rpi-4b")
    with EmulatedPlatform(board, uart_period_s=3600) as platform:
        chaos = Chaos(platform, board, random.Random(5), every=2, lasts=2)
        seen = []
        for _ in range(12):
            chaos.step()
            seen.append(platform.emulator.active_faults())
        assert all(len(faults) <= 1 for faults in seen)
        assert any(seen) and not all(seen)


def test_board_show_lists_parts_and_their_faults(capsys) -> None:
    import json

    from emulator.commands.board import run_show

    assert run_show(argparse.Namespace(board="rpi-5", json=True)) == 0
    parts = {p["sensor_id"]: p for p in map(json.loads, capsys.readouterr().out.splitlines())}
    assert parts["position"]["chip"] == "NMEA GPS" and "garbage" in parts["position"]["faults"]
    assert parts["climate"]["address"] == 0x77 and "wrong_chip" in parts["climate"]["faults"]
    assert run_show(argparse.Namespace(board="rpi-4b", json=False)) == 0
    text = capsys.readouterr().out
    assert "ROOST_EMULATOR_FAULTS=climate=nack" in text and "suspend:SECONDS" in text
    assert run_show(argparse.Namespace(board="nope", json=False)) == 2
    assert "no board called 'nope'" in capsys.readouterr().err
