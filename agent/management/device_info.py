"""The ``deviceInfo`` reported property: what this device is and what it runs."""

from __future__ import annotations

import platform as pyplatform
from pathlib import Path
from typing import Any

from agent import __version__


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def serial_number(root: Path = Path("/")) -> str:
    """The board serial: device tree first (every Pi), then /proc/cpuinfo, then the machine id."""
    text = _read(root / "proc/device-tree/serial-number") or _read(root / "sys/firmware/devicetree/base/serial-number")
    if text and text.strip("\x00\n "):
        return text.strip("\x00\n ")
    for line in (_read(root / "proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Serial" and value.strip():
            return value.strip()
    machine_id = (_read(root / "etc/machine-id") or "").strip()
    return machine_id or "unknown"


def os_name(root: Path = Path("/")) -> str:
    fields = {}
    for line in (_read(root / "etc/os-release") or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value.strip().strip('"')
    return fields.get("PRETTY_NAME") or fields.get("NAME") or "unknown"


def hardware_model(root: Path = Path("/")) -> str:
    text = _read(root / "proc/device-tree/model")
    return text.strip("\x00\n ") if text else ""


def device_info(config: Any, *, root: Path = Path("/"), firmware_slot: str | None = None) -> dict[str, Any]:
    """Everything in ``deviceInfo``; missing facts are reported as "unknown", never guessed."""
    board = getattr(getattr(config, "device", None), "board", "") or "unknown"
    return {
        "board": Path(board).stem if board.endswith(".toml") else board,
        "model": hardware_model(root) or "unknown",
        "serialNumber": serial_number(root),
        "osName": os_name(root),
        "kernel": pyplatform.release(),
        "architecture": pyplatform.machine(),
        "agentVersion": __version__,
        "pythonVersion": pyplatform.python_version(),
        "firmwareSlot": firmware_slot or "unknown",
    }
