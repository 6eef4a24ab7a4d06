from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from firmware import bundle, keys
from firmware.errors import BundleFormatError, SignatureError

EXPIRES = datetime(2027, 1, 1, tzinfo=UTC)


@pytest.fixture
def built(tmp_path):
    image = tmp_path / "os.img"
    image.write_bytes(os.urandom(3 * 4096 + 100))
    manifest = bundle.build_manifest(image, compatible=["rpi-4b"], version="2.0", security_version=2,
                                     expires=EXPIRES, block_size=4096)
    out = tmp_path / "os.roostb"
    bundle.write_bundle(image, manifest, out)
    return image, manifest, out


def test_layout(built):
    image, manifest, out = built
    env = bundle.read_bundle_envelope(out)
    assert env.payload_offset % bundle.ALIGN == 0
    assert out.read_bytes()[env.payload_offset:] == image.read_bytes()
    assert env.signatures == ()
    assert manifest.block_count == 4


def test_sign_in_place_keeps_payload_and_offset(built, tmp_path):
    image, _, out = built
    before = bundle.read_bundle_envelope(out)
    k1, k2 = keys.generate(), keys.generate("ecdsa-p256")
    bundle.add_signatures(out, [bundle.sign_manifest(before.manifest_raw, k1)])
    env = bundle.add_signatures(out, [bundle.sign_manifest(before.manifest_raw, k2)])
    assert env.payload_offset == before.payload_offset
    assert out.read_bytes()[env.payload_offset:] == image.read_bytes()
    trusted = {keys.key_id(k): keys.TrustedKey(keys.key_id(k), keys.algorithm_of(k), k.public_key(), tmp_path)
               for k in (k1, k2)}
    assert bundle.verify_envelope(bundle.read_bundle_envelope(out), trusted, threshold=2).version == "2.0"


def test_detached_signature_must_match_the_manifest(built):
    _, _, out = built
    env = bundle.read_bundle_envelope(out)
    key = keys.generate()
    detached = bundle.signature_file(bundle.sign_manifest(env.manifest_raw, key), env.manifest_raw)
    assert bundle.read_signature_file(detached, env.manifest_raw).key_id == keys.key_id(key)
    with pytest.raises(SignatureError, match="different manifest"):
        bundle.read_signature_file(detached, env.manifest_raw + b" ")
    with pytest.raises(SignatureError, match="not a roost detached signature"):
        bundle.read_signature_file(b"{}", env.manifest_raw)


def test_threshold_below_one_is_refused(built):
    _, _, out = built
    with pytest.raises(SignatureError, match="cannot be disabled"):
        bundle.verify_envelope(bundle.read_bundle_envelope(out), {}, threshold=0)


def test_too_many_signatures_for_the_area(built):
    _, _, out = built
    env = bundle.read_bundle_envelope(out)
    sigs = [bundle.Signature(f"{i:032x}", "ed25519", bytes(64)) for i in range(60)]
    with pytest.raises(SignatureError, match="do not fit"):
        bundle.encode_signatures(sigs, env.signature_area)


@pytest.mark.parametrize("data,words", [
    (b"ROOST", "too short"),
    (b"XXXXXXXX" + bytes(8), "bad magic"),
    (bundle.HEADER.pack(bundle.MAGIC, 0, 0), "manifest length 0"),
    (bundle.HEADER.pack(bundle.MAGIC, 10, 1 << 20), "signature area length"),
    (bundle.HEADER.pack(bundle.MAGIC, 100, 0) + b"{}", "truncated"),
])
def test_header_errors(data, words):
    with pytest.raises(BundleFormatError, match=words):
        bundle.read_envelope(lambda offset, length: data[offset:offset + length])


def test_header_reads_are_bounded():
    """A hostile header cannot make the reader ask for more than the caps."""
    asked = []
    data = bundle.HEADER.pack(bundle.MAGIC, bundle.MAX_MANIFEST, bundle.MAX_SIGNATURE_AREA)
    with pytest.raises(BundleFormatError):
        bundle.read_envelope(lambda o, n: (asked.append(n), data[o:o + n])[1])
    assert max(asked) <= bundle.MAX_MANIFEST + bundle.MAX_SIGNATURE_AREA


def test_empty_image(tmp_path):
    (tmp_path / "empty.img").write_bytes(b"")
    with pytest.raises(BundleFormatError, match="empty"):
        bundle.build_manifest(tmp_path / "empty.img", compatible=["rpi-4b"], version="1", security_version=0,
                              expires=EXPIRES)
