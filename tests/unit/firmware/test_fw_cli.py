"""`roost keys` and `roost bundle` end to end, including signing on another machine from the manifest alone."""

from __future__ import annotations

import json
import os
import stat

import pytest

from agent.cli import main
from firmware import keys


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "os.img").write_bytes(os.urandom(5 * 4096 + 7))
    (tmp_path / "keys").mkdir()
    return tmp_path


def roost(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_generate_create_verify_inspect(work, capsys):
    rc, out, _ = roost(capsys, "keys", "generate", "release")
    assert rc == 0 and "mode 0600" in out
    assert stat.S_IMODE((work / "release.key").stat().st_mode) == 0o600
    (work / "keys" / "release.pem").write_bytes((work / "release.pem").read_bytes())
    rc, out, _ = roost(capsys, "keys", "list", "--dir", "keys")
    kid = keys.key_id(keys.load_public(work / "release.pem"))
    assert rc == 0 and out.split()[:2] == [kid, "ed25519"]

    rc, out, err = roost(capsys, "bundle", "create", "os.img", "-o", "os.roostb", "--version", "2.0",
                         "--compatible", "rpi-4b", "--security-version", "4", "--block-size", "4096",
                         "--key", "release.key")
    assert rc == 0, err
    assert "6 blocks" in out and "signed by" in out
    rc, out, err = roost(capsys, "bundle", "verify", "os.roostb", "--keys", "keys", "--board", "rpi-4b")
    assert rc == 0 and "6 blocks verified" in out, err
    rc, out, _ = roost(capsys, "bundle", "inspect", "os.roostb", "--json")
    doc = json.loads(out)
    assert doc["version"] == "2.0" and doc["security_version"] == 4 and not doc["verified"]
    assert len(doc["signatures"]) == 1

    rc, _, err = roost(capsys, "bundle", "verify", "os.roostb", "--keys", "keys", "--board", "rpi-5")
    assert rc == 12 and "not rpi-5" in err


def test_offline_signing_from_the_manifest(work, capsys):
    roost(capsys, "keys", "generate", "offline", "--algorithm", "ecdsa-p256")
    (work / "keys" / "offline.pem").write_bytes((work / "offline.pem").read_bytes())
    rc, out, _ = roost(capsys, "bundle", "create", "os.img", "-o", "os.roostb", "--version", "3", "--compatible",
                       "rpi-4b", "--security-version", "1")
    assert rc == 0 and "UNSIGNED" in out
    rc, _, err = roost(capsys, "bundle", "verify", "os.roostb", "--keys", "keys")
    assert rc == 11 and "unsigned" in err
    # build machine: export the manifest; signing machine: sign it; build machine: attach
    assert roost(capsys, "bundle", "inspect", "os.roostb", "--manifest-out", "m.json")[0] == 0
    rc, out, err = roost(capsys, "bundle", "sign", "--manifest", "m.json", "--key", "offline.key", "-o", "m.sig")
    assert rc == 0, err
    payload = (work / "os.roostb").read_bytes()[-100:]
    rc, out, err = roost(capsys, "bundle", "sign", "os.roostb", "--signature", "m.sig")
    assert rc == 0, err
    assert (work / "os.roostb").read_bytes()[-100:] == payload
    assert roost(capsys, "bundle", "verify", "os.roostb", "--keys", "keys")[0] == 0


def test_tampered_bundle_fails_verify(work, capsys):
    roost(capsys, "keys", "generate", "k")
    (work / "keys" / "k.pem").write_bytes((work / "k.pem").read_bytes())
    roost(capsys, "bundle", "create", "os.img", "-o", "os.roostb", "--version", "2", "--compatible", "rpi-4b",
          "--security-version", "1", "--key", "k.key", "--block-size", "4096")
    data = bytearray((work / "os.roostb").read_bytes())
    data[-5] ^= 1
    (work / "os.roostb").write_bytes(bytes(data))
    rc, _, err = roost(capsys, "bundle", "verify", "os.roostb", "--keys", "keys")
    assert rc == 13 and "block 5" in err


@pytest.mark.parametrize("argv,code,words", [
    (["keys", "generate", "x", "--algorithm", "rsa"], 2, ""),
    (["bundle", "create", "missing.img", "-o", "o", "--version", "1", "--compatible", "rpi-4b",
      "--security-version", "1"], 10, "does not exist"),
    (["bundle", "create", "os.img", "-o", "o", "--version", "1", "--compatible", "Bad Board",
      "--security-version", "1"], 10, "'compatible'"),
    (["bundle", "create", "os.img", "-o", "o", "--version", "1", "--compatible", "rpi-4b",
      "--security-version", "1", "--expires", "soon"], 10, "UTC time"),
    (["bundle", "sign", "os.img", "--key", "nokey.key"], 10, "bad magic"),
    (["bundle", "sign"], 1, "give a BUNDLE"),
    (["bundle", "inspect", "os.img"], 10, "bad magic"),
    (["keys", "list", "--dir", "nowhere"], 18, "does not exist"),
    (["update", "--config", "nowhere.toml", "status"], 2, "not found"),
])
def test_errors_are_clear(work, capsys, argv, code, words):
    if code == 2 and not words:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        return
    rc, _, err = roost(capsys, *argv)
    assert rc == code and words in err, err


def test_generate_refuses_to_overwrite(work, capsys):
    assert roost(capsys, "keys", "generate", "k")[0] == 0
    before = (work / "k.key").read_bytes()
    rc, _, err = roost(capsys, "keys", "generate", "k")
    assert rc == 18 and "already exists" in err
    assert (work / "k.key").read_bytes() == before


def test_update_config_errors(work, capsys):
    (work / "bad.toml").write_text("[update\n")
    rc, _, err = roost(capsys, "update", "--config", "bad.toml", "status")
    assert rc == 2 and "not valid TOML" in err
    (work / "noslot.toml").write_text('[update]\nboard = "rpi-4b"\n[update.slots]\na = "x"\n')
    rc, _, err = roost(capsys, "update", "--config", "noslot.toml", "status")
    assert rc == 2 and "slots 'a' and 'b'" in err
    (work / "typo.toml").write_text('[update]\nboard = "rpi-4b"\nbaord = 1\n[update.slots]\na = "x"\nb = "y"\n')
    rc, _, err = roost(capsys, "update", "--config", "typo.toml", "status")
    assert rc == 2 and "baord" in err


def test_file_system_errors_are_messages(work, capsys):
    rc, _, err = roost(capsys, "bundle", "create", "os.img", "-o", "no/such/dir/os.roostb", "--version", "1",
                       "--compatible", "rpi-4b", "--security-version", "1")
    assert rc == 1 and "No such file or directory" in err and "Traceback" not in err
    (work / "state-is-a-file").write_text("")
    for name in ("a", "b"):
        (work / f"{name}.img").write_bytes(b"\0" * 4096)
    (work / "dt").mkdir()
    (work / "cfg.toml").write_text(
        '[update]\nboard = "rpi-4b"\nstate_dir = "state-is-a-file"\n[update.slots]\na = "a.img"\nb = "b.img"\n'
        '[update.boot]\nbackend = "emulated"\ndirectory = "dt"\n')
    (work / "dt" / "booted.json").write_text('{"slot": "a", "trial": false}')
    rc, _, err = roost(capsys, "update", "--config", "cfg.toml", "status")
    assert rc == 1 and "Not a directory" in err, err
