"""A device that parses no certificate does not load ``cryptography`` (about 8 MB of its memory), and the
modules the agent imports at start leave out what only rare actions need (tarfile for diagnostics bundles,
shutil for a factory reset, tempfile).

Each check runs in a fresh interpreter, because this test process has imported cryptography long ago.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from mgmt_tls_server import HandshakeServer

from emulator.pki import Pki

# What agent.daemon imports at start, and what it imports while starting (identity, management, DPS client).
START_MODULES = ["agent.daemon", "agent.identity", "agent.identity.dps", "agent.identity.trust",
                 "agent.identity.tls_check", "agent.management", "agent.logging", "agent.commands.run",
                 "agent.commands.doctor", "agent.commands.provision"]

# Packages only some actions need; the agent's start-up imports must not load them.
HEAVY = ("cryptography", "tarfile", "shutil", "tempfile")
KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def _run(code: str) -> dict:
    """Run ``code`` (it fills ``result``) in a new interpreter; returns ``result`` and which of HEAVY it loaded."""
    wrapper = code + textwrap.dedent(f"""
        import json, sys
        result["loaded"] = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
        print(json.dumps(result))
    """)
    done = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_start_modules_do_not_import_what_only_rare_actions_need():
    result = _run(f"import importlib\nresult = {{}}\nfor name in {START_MODULES!r}:\n"
                  "    importlib.import_module(name)\n")
    assert result["loaded"] == []


def test_the_check_sees_cryptography_when_a_certificate_is_parsed(tmp_path):
    # The same probe must notice the import once a certificate really is read (listing the anchors).
    root = Pki(tmp_path / "pki").root()
    result = _run("from agent.identity.trust import TrustStore\n"
                  f"result = {{'anchors': len(TrustStore({str(tmp_path)!r}, {str(root.cert_path)!r}).anchors())}}\n")
    assert result["anchors"] == 1 and "cryptography" in result["loaded"]


def test_resolving_an_identity_behind_a_trusted_gateway_does_not_import_cryptography(tmp_path, loopback_address):
    pki = Pki(tmp_path / "pki")
    cert = pki.gateway([loopback_address])
    (tmp_path / "conn.txt").write_text(f"HostName=hub.example;DeviceId=pi-7;SharedAccessKey={KEY}\n")
    data = {"device": {"state_dir": str(tmp_path / "state")},
            "identity": {"method": "connection-string", "connection_string_file": str(tmp_path / "conn.txt")},
            "hub": {"ca_file": str(pki.root().cert_path), "gateway_hostname": loopback_address,
                    "connect_timeout_s": 5.0}}
    code = textwrap.dedent(f"""
        from agent.config import parse_config
        from agent import identity
        config, problems = parse_config({data!r})
        creds = identity.resolve(config, {str(tmp_path / "state")!r})
        result = {{"gateway": creds.gateway_hostname, "bundle": creds.ca_pem}}
    """)
    with HandshakeServer(loopback_address, cert.chain_path, cert.key_path):
        result = _run(code)
    # resolve() handshook with the gateway and found its chain and name right, all without cryptography.
    assert result["gateway"] == loopback_address and result["bundle"] == pki.root().pem
    assert "cryptography" not in result["loaded"]


@pytest.mark.parametrize("content", [
    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",      # base64, but not a certificate
    "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",      # not base64
])
def test_a_damaged_ca_file_is_named_when_connecting(tmp_path, content):
    from agent.identity import TrustError
    from agent.identity.trust import TrustStore

    (tmp_path / "ca.pem").write_text(content)
    with pytest.raises(TrustError, match="holds no PEM certificate") as info:
        TrustStore(tmp_path, tmp_path / "ca.pem").bundle()
    assert info.value.kind == "config" and "hub.ca_file" in info.value.fix
