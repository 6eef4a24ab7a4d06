"""The device's symmetric key, and its rotation.

The configured key file (``identity.symmetric_key_file``, or the key derived from ``group_key_file``) is the
factory key. ``rotateDeviceKey`` installs a new device key in ``state_dir/identity/device.key`` (0600), which
then takes precedence; the key it replaced is kept as ``device.key.previous`` so an operator can roll back.
"""

from __future__ import annotations

import base64
import binascii
import socket
from pathlib import Path
from typing import Any

from agent.identity.credentials import derive_device_key
from agent.identity.errors import ConfigurationError
from agent.identity.secure_files import read_text, write_private

OVERRIDE_NAME = "identity/device.key"


def registration_id(config: Any) -> str:
    """The configured registration id, or the host name (what the DPS docs suggest for Linux devices)."""
    return config.identity.registration_id or socket.gethostname()


def check_key_b64(text: str, what: str) -> bytes:
    """Decode a base64 key, insisting on the 16..64 bytes DPS and IoT Hub accept."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{what} is not valid base64",
                                 "paste the key exactly as the portal shows it (ends in '=' usually)") from None
    if not 16 <= len(raw) <= 64:
        raise ConfigurationError(f"{what} decodes to {len(raw)} bytes; IoT Hub keys are 16 to 64 bytes",
                                 "use the primary or secondary key of the enrollment or device")
    return raw


def override_path(state_dir: Path) -> Path:
    return Path(state_dir) / OVERRIDE_NAME


def device_key(config: Any, state_dir: Path) -> tuple[str, str]:
    """(base64 device key, source) for a symmetric identity: rotated key, individual key, or group-derived."""
    override = override_path(state_dir)
    if override.exists():
        text = override.read_text().strip()
        check_key_b64(text, f"rotated device key {override}")
        return text, "rotated"
    ident = config.identity
    if ident.symmetric_key_file:
        key = _key_file(ident, "symmetric_key_file", "write the enrollment's primary key (base64) into it")
        return key, "individual"
    if ident.group_key_file:
        text = _key_file(ident, "group_key_file", "write the group enrollment's primary key (base64) into it")
        derived = derive_device_key(text, registration_id(config))
        return base64.b64encode(derived).decode(), "group"
    raise ConfigurationError("symmetric identity has no key file",
                             "set identity.symmetric_key_file or identity.group_key_file")


def _key_file(ident: Any, setting: str, fix: str) -> str:
    """The base64 key in the file that ``identity.<setting>`` names, checked."""
    path = getattr(ident, setting)
    text = read_text(path, f"identity.{setting}", fix).strip()
    check_key_b64(text, f"identity.{setting} {path}")
    return text


def install_rotated_key(state_dir: Path, new_key_b64: str, current_key_b64: str) -> None:
    """Make ``new_key_b64`` the device key, keeping the current one as ``.previous``."""
    check_key_b64(new_key_b64, "the new device key")
    path = override_path(state_dir)
    write_private(path.with_name(path.name + ".previous"), current_key_b64 + "\n")
    write_private(path, new_key_b64.strip() + "\n")
