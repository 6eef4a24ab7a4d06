from __future__ import annotations

import stat

import pytest

from firmware import keys
from firmware.errors import KeyFileError


@pytest.mark.parametrize("algorithm", keys.ALGORITHMS)
def test_generate_sign_verify_round_trip(tmp_path, algorithm):
    key = keys.generate(algorithm)
    keys.write_private(key, tmp_path / "k.key")
    keys.write_public(key, tmp_path / "k.pem")
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    loaded = keys.load_private(tmp_path / "k.key")
    public = keys.load_public(tmp_path / "k.pem")
    sig = keys.sign(loaded, b"manifest")
    assert keys.verify(public, sig, b"manifest")
    assert not keys.verify(public, sig, b"manifesT")
    assert keys.key_id(loaded) == keys.key_id(public) and len(keys.key_id(public)) == 32
    assert keys.algorithm_of(public) == algorithm


def test_private_key_is_never_overwritten(tmp_path):
    keys.write_private(keys.generate(), tmp_path / "k.key")
    before = (tmp_path / "k.key").read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        keys.write_private(keys.generate(), tmp_path / "k.key")
    assert (tmp_path / "k.key").read_bytes() == before


def test_unknown_algorithm():
    with pytest.raises(KeyFileError, match="ed25519, ecdsa-p256"):
        keys.generate("rsa")


def test_garbage_key_file(tmp_path):
    (tmp_path / "bad.pem").write_text("hello")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        keys.load_public(tmp_path / "bad.pem")
    with pytest.raises(KeyFileError, match="roost keys generate"):
        keys.load_private(tmp_path / "bad.pem")
    with pytest.raises(KeyFileError, match="cannot read"):
        keys.load_private(tmp_path / "missing.key")


def test_trusted_directory(tmp_path):
    a, b = keys.generate(), keys.generate("ecdsa-p256")
    keys.write_public(a, tmp_path / "a.pem")
    keys.write_public(b, tmp_path / "b.pub")
    (tmp_path / "README").write_text("not a key")
    trusted = keys.load_trusted(tmp_path)
    assert set(trusted) == {keys.key_id(a), keys.key_id(b)}
    with pytest.raises(KeyFileError, match="does not exist"):
        keys.load_trusted(tmp_path / "nope")
