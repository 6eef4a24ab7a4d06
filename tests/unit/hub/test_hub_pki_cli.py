"""`roost-sim pki`: files, modes, messages."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from emulator.cli import main


def test_pki_commands_create_chain_and_device_certificates(tmp_path, capsys):
    directory = tmp_path / "pki"
    assert main(["pki", "--dir", str(directory), "root"]) == 0
    assert main(["pki", "--dir", str(directory), "gateway", "--hostname", "gw.local", "--hostname", "127.0.0.7"]) == 0
    assert main(["pki", "--dir", str(directory), "device", "cam-1", "--self-signed"]) == 0
    out = capsys.readouterr().out
    thumb = next(line.split()[-1] for line in out.splitlines() if "SHA-1" in line)
    cert = x509.load_pem_x509_certificate((directory / "device-cam-1.pem").read_bytes())
    assert cert.subject == cert.issuer and thumb == cert.fingerprint(hashes.SHA1()).hex().upper()
    gateway = x509.load_pem_x509_certificate((directory / "gateway.pem").read_bytes())
    names = gateway.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in names] == ["gw.local", "127.0.0.7"]
    for key in directory.glob("*.key.pem"):
        assert key.stat().st_mode & 0o777 == 0o600
    assert main(["pki", "--dir", str(directory), "show"]) == 0
    assert "gateway.pem" in capsys.readouterr().out


def test_pki_errors_are_clear(tmp_path, capsys):
    assert main(["pki", "--dir", str(tmp_path / "empty"), "show"]) == 1
    assert "roost-sim pki root" in capsys.readouterr().out
    assert main(["pki", "--dir", str(tmp_path), "device", "d", "--days", "0"]) == 2
    assert "--days" in capsys.readouterr().err
    assert main(["pki", "--dir", str(tmp_path)]) == 2
