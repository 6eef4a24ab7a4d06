from __future__ import annotations

import struct

import pytest

from firmware.boot.rpi_tryboot import RpiTryboot, parse_autoboot, render_autoboot
from firmware.durable import Storage
from firmware.errors import BootError


@pytest.fixture
def backend(tmp_path):
    (tmp_path / "dt").mkdir()
    return RpiTryboot(tmp_path, tmp_path / "dt", {"a": 2, "b": 3, "golden": 4}, Storage(), None,
                      boot_id_file=tmp_path / "boot_id")


def test_render_matches_the_firmware_format():
    text = render_autoboot(2, 3).decode()
    assert text == "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"
    assert parse_autoboot(text) == {"all": {"tryboot_a_b": "1", "boot_partition": "2"},
                                    "tryboot": {"boot_partition": "3"}}


def test_arm_commit_and_primary(backend):
    backend.set_primary("a")
    assert backend.primary() == "a"
    backend.arm_trial("b", "a")
    assert parse_autoboot(backend.autoboot.read_text())["tryboot"]["boot_partition"] == "3"
    assert backend.primary() == "a"
    backend.commit("b", "a")
    assert backend.primary() == "b"
    assert parse_autoboot(backend.autoboot.read_text())["tryboot"]["boot_partition"] == "2"


def test_booted_from_device_tree(backend, tmp_path):
    (tmp_path / "dt" / "partition").write_bytes(struct.pack(">I", 3))
    (tmp_path / "dt" / "tryboot").write_bytes(struct.pack(">I", 1))
    (tmp_path / "boot_id").write_text("x1\n")
    info = backend.booted()
    assert (info.slot, info.trial, info.boot_id) == ("b", True, "x1")


def test_clear_errors(backend, tmp_path):
    with pytest.raises(BootError, match="not started by Raspberry Pi firmware"):
        backend.booted()
    (tmp_path / "dt" / "partition").write_bytes(struct.pack(">I", 7))
    (tmp_path / "dt" / "tryboot").write_bytes(b"\0\0\0\0")
    with pytest.raises(BootError, match="partition 7"):
        backend.booted()
    (tmp_path / "dt" / "partition").write_bytes(b"\0")
    with pytest.raises(BootError, match="big-endian u32"):
        backend.booted()
    with pytest.raises(BootError, match="mount the boot partition"):
        backend.primary()
    backend.autoboot.write_text("[all]\ntryboot_a_b=1\n")
    with pytest.raises(BootError, match="no \\[all\\] boot_partition"):
        backend.primary()
    with pytest.raises(BootError, match="no reboot command"):
        backend.reboot(True)
