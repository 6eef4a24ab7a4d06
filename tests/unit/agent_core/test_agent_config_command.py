"""`roost config check` output and exit codes."""

from __future__ import annotations

import os

from agent.cli import main

GOOD = """
[device]
platform = "emulated"
[identity]
method = "connection-string"
connection_string_file = "cs"
"""


def test_good_config_prints_a_summary(tmp_path, capsys):
    (tmp_path / "cs").write_text("HostName=h;DeviceId=d;SharedAccessKey=eA==")
    os.chmod(tmp_path / "cs", 0o600)
    (tmp_path / "roost.toml").write_text(GOOD)
    assert main(["config", "check", "--config", str(tmp_path / "roost.toml")]) == 0
    out = capsys.readouterr().out
    assert ": OK" in out and "identity   connection-string" in out and "batches up to 4096 bytes" in out


def test_problems_are_listed_with_keys_and_fixes(tmp_path, capsys):
    (tmp_path / "roost.toml").write_text(GOOD.replace("connection-string", "conection-string") + "[hub]\nfoo = 1\n")
    assert main(["config", "check", "--config", str(tmp_path / "roost.toml")]) == 1
    out = capsys.readouterr().out
    assert "error: identity.method: 'conection-string' is not one of" in out
    assert "did you mean 'connection-string'?" in out
    assert "error: hub.foo: unknown key" in out
    assert "2 error(s)" in out


def test_loose_key_file_is_a_warning_not_an_error(tmp_path, capsys):
    (tmp_path / "cs").write_text("HostName=h;DeviceId=d;SharedAccessKey=eA==")
    os.chmod(tmp_path / "cs", 0o644)
    (tmp_path / "roost.toml").write_text(GOOD)
    assert main(["config", "check", "--config", str(tmp_path / "roost.toml")]) == 0
    out = capsys.readouterr().out
    assert "warning: identity.connection_string_file" in out and "chmod 600" in out


def test_environment_variable_names_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ROOST_CONFIG", str(tmp_path / "missing.toml"))
    assert main(["config", "check"]) == 1
    assert "missing.toml does not exist" in capsys.readouterr().out
