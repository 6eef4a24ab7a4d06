"""agent.cli: a command line that names its subcommand imports that subcommand only; help still shows them all."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import textwrap

import pytest

from agent import cli, commands


def test_command_names_are_the_public_modules_like_pkgutil_sees_them():
    import emulator.commands

    for package in (commands, emulator.commands):
        expected = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))
        assert cli.command_names(package) == expected
    assert "run" in cli.command_names(commands)


@pytest.mark.parametrize(("argv", "expected"), [
    (["run", "--config", "x.toml"], "run"),
    (["-v", "-v", "run"], "run"),
    (["--verbose", "doctor", "--strict"], "doctor"),
    (["--version"], None),
    (["--help"], None),
    ([], None),
    (["bogus", "run"], None),
    (["--", "run"], None),
])
def test_requested_command(argv, expected):
    assert cli.requested_command(argv, cli.command_names(commands)) == expected


PROBE = textwrap.dedent("""
    import json, sys
    from agent import cli
    rc = cli.main(sys.argv[1:])
    loaded = sorted(m for m in sys.modules if m.startswith("agent.commands.") or m.startswith("firmware."))
    print(json.dumps({"rc": rc, "loaded": loaded}))
""")


def _probe(*argv: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_roost_run_imports_the_run_command_only(tmp_path):
    # A config that cannot be read: `roost run` stops at once with EX_CONFIG, after parsing its command line.
    result = _probe("run", "--config", str(tmp_path / "missing.toml"))
    assert result["rc"] == 78
    assert result["loaded"] == ["agent.commands.run"]


def test_a_command_line_without_a_known_command_sees_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    for name in cli.command_names(commands):
        assert f"    {name} " in shown

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bogus"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "invalid choice: 'bogus'" in error and "'run'" in error and "'update'" in error


def test_bare_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_any_command_package_works_the_same_way(tmp_path, monkeypatch, capsys):
    package = tmp_path / "roost_cli_probe_commands"
    (package / "beta").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "_helpers.py").write_text("raise AssertionError('private modules are not commands')\n")
    (package / "notes.txt").write_text("not a module\n")
    (package / "alpha.py").write_text(textwrap.dedent("""
        def register(sub):
            sub.add_parser("alpha", help="the first").set_defaults(func=lambda args: 7)
    """))
    (package / "beta" / "__init__.py").write_text(textwrap.dedent("""
        def register(sub):
            sub.add_parser("beta", help="a package").set_defaults(func=lambda args: 8)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = importlib.import_module("roost_cli_probe_commands")
    try:
        assert cli.command_names(probe) == ["alpha", "beta"]
        assert cli.main_for("probe", "", probe, ["alpha"]) == 7
        assert "roost_cli_probe_commands.beta" not in sys.modules
        assert cli.main_for("probe", "", probe, ["beta"]) == 8
        with pytest.raises(SystemExit):
            cli.main_for("probe", "", probe, ["--help"])
        assert "alpha" in capsys.readouterr().out
    finally:
        for name in [m for m in sys.modules if m.startswith("roost_cli_probe_commands")]:
            del sys.modules[name]
