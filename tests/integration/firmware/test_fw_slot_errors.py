"""Disk full, read-only slot, slot smaller than the image: a clear error, and nothing switched."""

from __future__ import annotations

import os
import subprocess

import pytest
from fwrig import Rig

from agent.cli import main
from firmware.slots import Slot


@pytest.fixture
def rig(tmp_path):
    return Rig(tmp_path, "rpi-tryboot")


def _unchanged(rig, selector, before_a):
    assert rig.selector_files() == selector
    assert rig.slot_bytes("a") == before_a
    status = rig.engine().status()
    assert status["pending"] is None and status["primary_slot"] == "a"
    outcome, report = rig.settle()
    assert (outcome.slot, report.mode) == ("a", "normal")


def test_disk_full(rig, capsys):
    # /dev/full accepts the open and fails every write with ENOSPC, like a full disk under a slot file
    rig.config.slots["b"] = Slot("b", rig.slot_paths["b"].parent / "full", size=1 << 20)
    os.symlink("/dev/full", rig.slot_paths["b"].parent / "full")
    selector, before_a = rig.selector_files(), rig.slot_bytes("a")
    rc = main(["update", "--config", str(rig.config_file()), "install", str(rig.bundle("2.0"))])
    err = capsys.readouterr().err
    assert rc == 15 and "no space left" in err and "nothing was switched" in err, err
    _unchanged(rig, selector, before_a)
    assert rig.engine().status()["slots"]["b"]["status"] == "writing"


@pytest.fixture
def read_only_slot(rig):
    path = rig.slot_paths["b"]
    if os.geteuid() != 0:
        path.chmod(0o444)
        yield path
        path.chmod(0o644)
        return
    # root ignores file modes; the immutable attribute is what stops root's writes
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot make a file read-only for root here (chattr +i unsupported)")
    yield path
    subprocess.run(["chattr", "-i", str(path)], check=False)


def test_read_only_slot(rig, read_only_slot, capsys):
    selector, before_a = rig.selector_files(), rig.slot_bytes("a")
    rc = main(["update", "--config", str(rig.config_file()), "install", str(rig.bundle("2.0"))])
    err = capsys.readouterr().err
    assert rc == 15 and "read-only" in err, err
    _unchanged(rig, selector, before_a)


def test_slot_smaller_than_image(rig, capsys):
    small = rig.slot_paths["b"].parent / "small.img"
    small.write_bytes(b"\0" * 8192)
    path = rig.config_file()
    path.write_text(path.read_text().replace(str(rig.slot_paths["b"]), str(small)))
    selector, before_a = rig.selector_files(), rig.slot_bytes("a")
    rc = main(["update", "--config", str(path), "install", str(rig.bundle("2.0"))])
    err = capsys.readouterr().err
    assert rc == 15 and "holds only 8192" in err, err
    assert small.read_bytes() == b"\0" * 8192
    _unchanged(rig, selector, before_a)


def test_missing_slot(rig, capsys):
    path = rig.config_file()
    path.write_text(path.read_text().replace(str(rig.slot_paths["b"]), str(rig.tmp / "nowhere.img")))
    rc = main(["update", "--config", str(path), "install", str(rig.bundle("2.0"))])
    err = capsys.readouterr().err
    assert rc == 15 and "does not exist" in err, err
