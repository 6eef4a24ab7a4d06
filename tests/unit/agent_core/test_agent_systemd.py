"""agent.systemd: the sd_notify datagrams a real NOTIFY_SOCKET receives, and the watchdog interval."""

from __future__ import annotations

import os
import socket

import pytest

from agent import systemd


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_ready_status_and_watchdog_datagrams(notify_socket):
    assert systemd.ready("connected")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=connected"
    assert systemd.watchdog_ping()
    assert notify_socket.recv(4096) == b"WATCHDOG=1"
    assert systemd.stopping("flushing")
    assert notify_socket.recv(4096) == b"STOPPING=1\nSTATUS=flushing"


def test_abstract_namespace_socket(monkeypatch):
    name = f"roost-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        assert systemd.status("hello")
        assert sock.recv(100) == b"STATUS=hello"
    finally:
        sock.close()


def test_outside_systemd_nothing_happens(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.ready() is False


def test_a_vanished_socket_is_logged_not_raised(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert systemd.watchdog_ping() is False
    assert "cannot notify systemd" in caplog.text


@pytest.mark.parametrize("usec, pid, expected", [
    ("20000000", None, 10.0),
    ("20000000", "self", 10.0),
    ("20000000", "1", None),
    (None, None, None),
    ("soon", None, None),
    ("0", None, None),
])
def test_watchdog_interval_is_half_of_watchdogsec(monkeypatch, usec, pid, expected):
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert systemd.watchdog_interval() == expected
