"""The uboot backend against a real redundant environment, written and read by libubootenv's tools."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from emulator.board.boot import EmulatedBoard, read_env
from firmware.boot.uboot import UBoot
from firmware.durable import Storage
from firmware.errors import BootError

pytestmark = pytest.mark.skipif(shutil.which("fw_setenv") is None, reason="libubootenv-tool is not installed")


@pytest.fixture
def board(tmp_path):
    board = EmulatedBoard(tmp_path, "uboot", {"a": tmp_path / "a", "b": tmp_path / "b"})
    board.install_bootloader("a")
    return board


@pytest.fixture
def backend(board):
    return UBoot(board.fw_env_config, Storage(), None, cmdline=board.cmdline, boot_id_file=board.boot_id_file)


def printenv(board) -> dict[str, str]:
    out = subprocess.run(["fw_printenv", "-c", str(board.fw_env_config)], capture_output=True, text=True,
                         check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def test_fw_printenv_reads_the_factory_environment(board, backend):
    env = printenv(board)
    assert env["boot_slot"] == "a" and env["upgrade_available"] == "0" and env["bootlimit"] == "1"
    assert backend.primary() == "a"


def test_arm_trial_is_one_write_to_the_other_copy(board, backend):
    _, flag, index = read_env(board.env_copies)
    before = [p.read_bytes() for p in board.env_copies]
    backend.arm_trial("b", "a")
    after = [p.read_bytes() for p in board.env_copies]
    assert after[index] == before[index]            # the current copy is left intact: a cut keeps the old env
    env, new_flag, new_index = read_env(board.env_copies)
    assert new_index == 1 - index and new_flag == (flag + 1) % 256
    assert (env["boot_slot"], env["rollback_slot"], env["upgrade_available"], env["bootcount"]) == ("b", "a", "1", "0")
    assert backend.primary() == "a"


def test_trial_boot_then_bootlimit_falls_back(board, backend):
    backend.arm_trial("b", "a")
    first = board.power_on()
    assert (first.slot, first.trial) == ("b", True)
    info = backend.booted()
    assert (info.slot, info.trial) == ("b", True)
    assert printenv(board)["bootcount"] == "1"       # the emulated U-Boot's saveenv is readable by fw_printenv
    second = board.power_on()                        # watchdog reset: bootcount 2 > bootlimit 1 -> altbootcmd
    assert (second.slot, second.trial) == ("a", False)
    assert printenv(board)["upgrade_available"] == "0"
    assert backend.booted().slot == "a" and not backend.booted().trial


def test_commit(board, backend):
    backend.arm_trial("b", "a")
    board.power_on()
    backend.commit("b", "a")
    assert printenv(board)["upgrade_available"] == "0" and backend.primary() == "b"
    assert board.power_on().slot == "b" and board.power_on().slot == "b"


def test_one_corrupt_copy_is_survived(board, backend):
    backend.arm_trial("b", "a")
    _, _, index = read_env(board.env_copies)
    damaged = bytearray(board.env_copies[index].read_bytes())
    damaged[100] ^= 0xFF                             # the newest copy is torn: the older one is used
    board.env_copies[index].write_bytes(bytes(damaged))
    assert printenv(board)["upgrade_available"] == "0"
    assert board.power_on().slot == "a"


def test_clear_errors(board, backend, tmp_path):
    board.cmdline.write_text("console=ttyS0\n")
    with pytest.raises(BootError, match=r"roost\.slot=<slot>"):
        backend.booted()
    broken = UBoot(tmp_path / "missing.config", Storage(), None, cmdline=board.cmdline)
    with pytest.raises(BootError, match="fw_printenv"):
        broken.primary()
