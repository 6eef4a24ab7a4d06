"""`roost tpm info | ek` against swtpm: text for people, JSON for scripts, errors with their fix."""

from __future__ import annotations

import base64
import json

import pytest
from tpm2_pytss import TPM2B_PUBLIC

from agent.cli import main as roost
from agent.tpm.device import EK_HANDLE, Tpm, registration_id

pytestmark = pytest.mark.tpm


def test_info_text_and_json(swtpm, capsys):
    assert roost(["tpm", "info", "--tcti", swtpm.tcti]) == 0
    text = capsys.readouterr().out
    assert "IBM" in text and "sha256" in text and "not locked" in text
    assert roost(["tpm", "info", "--json", "--tcti", swtpm.tcti]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tcti"] == swtpm.tcti
    assert info["roost_handles"]["ek"] is True


def test_ek_prints_what_the_enrollment_needs(swtpm, capsys):
    assert roost(["tpm", "ek", "--json", "--tcti", swtpm.tcti]) == 0
    doc = json.loads(capsys.readouterr().out)
    ek = base64.b64decode(doc["endorsement_key"])
    public, used = TPM2B_PUBLIC.unmarshal(ek)
    assert used == len(ek)
    assert public.publicArea.unique.rsa
    assert doc["registration_id"] == registration_id(ek)
    assert doc["handle"] == "0x81010001"
    assert doc["ek_certificate"]
    assert roost(["tpm", "ek", "--tcti", swtpm.tcti]) == 0
    text = capsys.readouterr().out
    assert doc["registration_id"] in text and doc["endorsement_key"] in text
    assert "--attestation-type tpm" in text


def test_ek_missing_then_created(swtpm, capsys):
    with Tpm(swtpm.tcti) as tpm:
        before = tpm.ek_public()
        tpm.evict(EK_HANDLE)
    assert roost(["tpm", "ek", "--tcti", swtpm.tcti]) == 1
    err = capsys.readouterr().err
    assert "no endorsement key" in err and "fix: create it with `roost tpm ek --create`" in err
    assert roost(["tpm", "ek", "--create", "--json", "--tcti", swtpm.tcti]) == 0
    assert base64.b64decode(json.loads(capsys.readouterr().out)["endorsement_key"]) == before


def test_missing_device_is_an_error_with_a_fix(tmp_path, capsys):
    assert roost(["tpm", "info", "--tcti", f"device:{tmp_path}/tpmrm0"]) == 1
    err = capsys.readouterr().err
    assert f"no TPM device at {tmp_path}/tpmrm0" in err and "fix:" in err
    assert roost(["tpm", "info", "--json", "--tcti", f"device:{tmp_path}/tpmrm0"]) == 1
    assert json.loads(capsys.readouterr().out)["kind"] == "tpm-missing"


def test_tcti_comes_from_the_config(swtpm, tmp_path, capsys):
    config = tmp_path / "roost.toml"
    config.write_text(f'[identity]\nmethod = "tpm"\nid_scope = "0ne00000001"\ntpm_tcti = "{swtpm.tcti}"\n')
    assert roost(["tpm", "info", "--json", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["tcti"] == swtpm.tcti


def test_broken_config_is_reported(tmp_path, capsys):
    config = tmp_path / "roost.toml"
    config.write_text('[identity]\ntpm_tcti = 5\n')
    assert roost(["tpm", "info", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "identity.tpm_tcti" in err and "--tcti" in err


def test_tpm_without_subcommand_prints_help(capsys):
    assert roost(["tpm"]) == 2
    assert "roost tpm info" in capsys.readouterr().out
