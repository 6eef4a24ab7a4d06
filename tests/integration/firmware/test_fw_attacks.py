"""The attack table: every hostile or broken bundle is refused with a clear message and exit code, the running
slot and the boot selection are untouched, and no byte that is not part of the signed image reaches a slot."""

from __future__ import annotations

import struct
from datetime import timedelta

import pytest
from fwrig import Rig

from agent.cli import main
from firmware import keys
from firmware.bundle import HEADER, MAGIC, read_bundle_envelope
from firmware.errors import BundleFormatError, PayloadError, PolicyError, SignatureError, SlotError


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def _payload_offset(path):
    return read_bundle_envelope(path).payload_offset


def tampered(position):
    def make(rig: Rig):
        bundle = rig.bundle("2.0")
        size = rig.image_size
        offset = {"first": 0, "middle": size // 2, "last": size - 1}[position]
        _flip(bundle, _payload_offset(bundle) + offset)
        return bundle
    return make


def truncated(rig):
    bundle = rig.bundle("2.0")
    bundle.write_bytes(bundle.read_bytes()[:-100])
    return bundle


def extended(rig):
    bundle = rig.bundle("2.0")
    with open(bundle, "ab") as fh:
        fh.write(b"\0" * (1 << 20))
    return bundle


def unsigned(rig):
    return rig.bundle("2.0", signers=[])


def unknown_key(rig):
    return rig.bundle("2.0", signers=[keys.generate("ecdsa-p256")])


def wrong_board(rig):
    return rig.bundle("2.0", compatible=("rpi-zero-2w",))


def expired(rig):
    return rig.bundle("2.0", expires=rig.now - timedelta(seconds=1))


def mixed(rig):
    """The signed manifest and header of one bundle, followed by another bundle's payload of the same size."""
    a, b = rig.bundle("2.0", name="a"), rig.bundle("2.1", name="b")
    out = rig.bundles / "mixed.roostb"
    out.write_bytes(a.read_bytes()[:_payload_offset(a)] + b.read_bytes()[_payload_offset(b):])
    return out


def manifest_edited(rig):
    """A signed manifest whose security version was raised after signing (same length, so it still parses)."""
    bundle = rig.bundle("2.0", security_version=1)
    data = bundle.read_bytes().replace(b'"security_version":1', b'"security_version":9', 1)
    bundle.write_bytes(data)
    return bundle


def oversized_manifest(rig):
    out = rig.bundles / "huge.roostb"
    out.write_bytes(HEADER.pack(MAGIC, 64 * 1024 * 1024, 4096) + b"{" * 4096)
    return out


def not_a_bundle(rig):
    out = rig.bundles / "random.roostb"
    out.write_bytes(b"\x7fELF" + b"\0" * 5000)
    return out


def huge_image_claim(rig):
    """A correctly signed manifest for an image larger than the slot."""
    return rig.bundle("2.0", image=rig.image("2.0") + b"\0" * (64 * 1024))


CASES = [
    # name, builder, error class, exit code, words the message must contain
    ("tampered first byte", tampered("first"), PayloadError, 13, "block 0 "),
    ("tampered middle byte", tampered("middle"), PayloadError, 13, "does not match the signed manifest"),
    ("tampered last byte", tampered("last"), PayloadError, 13, "tampered"),
    ("truncated", truncated, PayloadError, 13, "truncated"),
    ("extended payload", extended, PayloadError, 13, "longer than its manifest"),
    ("unsigned", unsigned, SignatureError, 11, "unsigned"),
    ("unknown key", unknown_key, SignatureError, 11, "unknown key"),
    ("manifest edited after signing", manifest_edited, SignatureError, 11, "invalid signature"),
    ("wrong board", wrong_board, PolicyError, 12, "this device is rpi-4b"),
    ("expired", expired, PolicyError, 12, "expired"),
    ("mixed manifest and payload", mixed, PayloadError, 13, "another bundle's payload"),
    ("oversized manifest", oversized_manifest, BundleFormatError, 10, "manifest length"),
    ("not a bundle", not_a_bundle, BundleFormatError, 10, "bad magic"),
    ("image larger than the slot", huge_image_claim, SlotError, 15, "holds only"),
]


@pytest.fixture(params=["emulated", "rpi-tryboot"])
def rig(request, tmp_path):
    return Rig(tmp_path, request.param)


def _blocks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("name,build,error,code,words", CASES, ids=[c[0] for c in CASES])
def test_refused_and_nothing_switched(rig, capsys, name, build, error, code, words):
    bundle = build(rig)
    authentic = rig.image("2.0")
    before_a, before_b = rig.slot_bytes("a"), rig.slot_bytes("b")
    selector = rig.selector_files()
    state_before = rig.engine().status()

    rc = main(["update", "--config", str(rig.config_file()), "install", str(bundle)])
    err = capsys.readouterr().err
    assert rc == code, err
    assert words in err, err
    assert err.startswith("roost update: error: ")

    assert rig.slot_bytes("a") == before_a                       # the running slot is untouched
    assert rig.selector_files() == selector                      # the boot selection is untouched
    after_b = rig.slot_bytes("b")
    # verify-before-write: every block of the inactive slot is either what it was or the authentic image block
    for index, (old, new) in enumerate(zip(_blocks(before_b, rig.block_size), _blocks(after_b, rig.block_size),
                                           strict=True)):
        good = authentic[index * rig.block_size:(index + 1) * rig.block_size]
        assert new == old or new == good[:len(new)] or new[:len(good)] == good, f"block {index} holds foreign bytes"
    status = rig.engine().status()
    assert status["pending"] is None
    assert status["slots"].get("b", {}).get("status", "empty") in ("empty", "writing")
    assert status["security_version_floor"] == state_before["security_version_floor"]
    with pytest.raises(error, match=words.strip()):        # the Python API raises the matching class
        rig.engine().install(str(bundle))
    assert rig.slot_bytes("a") == before_a
    # the device keeps booting the old image
    outcome, report = rig.settle()
    assert (outcome.slot, outcome.image["version"], report.mode) == ("a", "1.0", "normal")


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_a_tampered_byte_never_reaches_the_slot(rig, position):
    bundle = tampered(position)(rig)
    payload = _payload_offset(bundle)
    data = bundle.read_bytes()
    offset = {"first": 0, "middle": rig.image_size // 2, "last": rig.image_size - 1}[position]
    with pytest.raises(PayloadError):
        rig.engine().install(str(bundle))
    assert rig.slot_bytes("b")[offset] != data[payload + offset]
    # blocks from the tampered one on were never written (the slot file was all zeros)
    first_bad = offset // rig.block_size
    assert rig.slot_bytes("b")[first_bad * rig.block_size:] == b"\0" * (len(rig.slot_bytes("b"))
                                                                          - first_bad * rig.block_size)


def test_downgrade_below_the_highest_committed_security_version(rig, capsys):
    rig.engine().install(str(rig.bundle("2.0", security_version=5)), reboot=True)
    rig.settle()
    old = rig.bundle("1.9", security_version=4)
    before = rig.slot_bytes("a")
    rc = main(["update", "--config", str(rig.config_file()), "install", str(old)])
    err = capsys.readouterr().err
    assert rc == 12 and "downgrade refused" in err and "floor 5" in err
    assert rig.slot_bytes("a") == before
    # the same security version is allowed (a rebuild), a higher one too
    rig.engine().install(str(rig.bundle("2.0.1", security_version=5)))


def test_threshold_needs_distinct_trusted_keys(tmp_path):
    rig = Rig(tmp_path)
    second = keys.generate("ecdsa-p256")
    keys.write_public(second, rig.keys_dir / "second.pem")
    rig.config.signature_threshold = 2
    with pytest.raises(SignatureError, match="1 valid trusted signature"):
        rig.engine().install(str(rig.bundle("2.0")))
    rig.engine().install(str(rig.bundle("2.1", signers=[rig.key, second])))


def test_signature_verification_cannot_be_configured_away(tmp_path):
    rig = Rig(tmp_path)
    path = rig.config_file()
    path.write_text(path.read_text().replace("[update]\n", "[update]\nsignature_threshold = 0\n"))
    rc = main(["update", "--config", str(path), "install", str(rig.bundle("2.0"))])
    assert rc == 2
    assert rig.engine().status()["slots"].get("b") is None


def test_key_rotation(tmp_path):
    """Old and new key trusted during the change-over; bundles signed by the new key only afterwards."""
    rig = Rig(tmp_path)
    new = keys.generate("ed25519")
    keys.write_public(new, rig.keys_dir / "release-2027.pem")
    rig.engine().install(str(rig.bundle("2.0", signers=[rig.key, new])), reboot=True)
    rig.settle()
    (rig.keys_dir / "release.pem").unlink()       # retire the old key
    with pytest.raises(SignatureError, match="unknown key"):
        rig.engine().install(str(rig.bundle("3.0", signers=[rig.key])))
    rig.engine().install(str(rig.bundle("3.1", signers=[new])))


def test_private_key_in_the_trusted_directory_is_refused(tmp_path):
    rig = Rig(tmp_path)
    keys.write_private(keys.generate(), rig.keys_dir / "oops.pem")
    with pytest.raises(Exception, match="is a private key"):
        rig.engine().install(str(rig.bundle("2.0")))


def test_damaged_signature_area_is_a_format_error(tmp_path):
    rig = Rig(tmp_path)
    bundle = rig.bundle("2.0")
    data = bytearray(bundle.read_bytes())
    m_len = struct.unpack(">I", data[8:12])[0]
    data[HEADER.size + m_len:HEADER.size + m_len + 5] = b"xxxxx"
    bundle.write_bytes(bytes(data))
    with pytest.raises(BundleFormatError, match="signature area is damaged"):
        rig.engine().install(str(bundle))


@pytest.mark.parametrize("name,build,error,code,words", CASES, ids=[c[0] for c in CASES])
def test_verify_first_leaves_the_inactive_slot_exactly_as_it_was(tmp_path, capsys, name, build, error, code, words):
    """With verify_first every attack, a tampered last byte included, is refused before any byte is written."""
    rig = Rig(tmp_path, "rpi-tryboot")
    bundle = build(rig)
    before_b, selector = rig.slot_bytes("b"), rig.selector_files()
    path = rig.config_file()
    path.write_text(path.read_text().replace("[update]\n", "[update]\nverify_first = true\n", 1))
    rc = main(["update", "--config", str(path), "install", str(bundle)])
    err = capsys.readouterr().err
    assert rc == code and words in err, err
    assert rig.slot_bytes("b") == before_b
    assert rig.selector_files() == selector
    assert "b" not in rig.engine().status()["slots"]          # not even marked as being written


def test_verify_first_still_installs_good_bundles(tmp_path, capsys):
    rig = Rig(tmp_path, "uboot")
    # --reboot runs the configured reboot command: the emulated board's ROM, which boots the trial
    assert main(["update", "--config", str(rig.config_file()), "install", "--verify-first", "--reboot",
                 str(rig.bundle("2.0"))]) == 0
    assert "rebooting into its trial boot" in capsys.readouterr().out
    assert rig.board.current_slot() == "b"
    assert main(["update", "--config", str(rig.config_file()), "check"]) == 0
    outcome, report = rig.settle()
    assert (outcome.slot, outcome.image["version"], report.mode) == ("b", "2.0", "normal")
