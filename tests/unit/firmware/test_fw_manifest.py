from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.errors import BundleFormatError
from firmware.manifest import Manifest

EXPIRES = datetime(2027, 1, 1, tzinfo=UTC)


def manifest(**changes) -> Manifest:
    fields = dict(compatible=("rpi-4b",), version="1.0", security_version=1, expires=EXPIRES, image_size=10000,
                  block_size=4096, digests=b"".join(hashlib.sha256(bytes([i])).digest() for i in range(3)))
    fields.update(changes)
    return Manifest(**fields)


@given(size=st.integers(1, 200_000), sv=st.integers(0, 2**31 - 1), golden=st.booleans(),
       boards=st.lists(st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,10}\Z"), min_size=1, max_size=3))
@settings(max_examples=60, deadline=None)
def test_round_trip_is_canonical(size, sv, golden, boards):
    count = -(-size // 4096)
    m = manifest(image_size=size, security_version=sv, golden=golden, compatible=tuple(boards),
                 digests=bytes(32 * count))
    raw = m.to_json()
    again = Manifest.from_json(raw)
    assert again == m and again.to_json() == raw
    assert again.block_count == count
    assert sum(again.block_length(i) for i in range(count)) == size


def _doc(**changes) -> bytes:
    doc = json.loads(manifest().to_json())
    doc.update(changes)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("changes,words", [
    ({"format": 2}, "format 2 is not supported"),
    ({"compatible": []}, "'compatible'"),
    ({"compatible": ["RPi 4"]}, "'compatible'"),
    ({"version": ""}, "'version'"),
    ({"security_version": -1}, "'security_version'"),
    ({"security_version": True}, "'security_version'"),
    ({"image_size": 0}, "'image_size'"),
    ({"block_size": 3000}, "power of two"),
    ({"block_size": 1 << 30}, "power of two"),
    ({"blocks": "00" * 32}, "holds 1 block hashes but image_size/block_size needs 3"),
    ({"blocks": ["00" * 32] * 3}, "holds no block"),
    ({"blocks": "zz" * 96}, "lowercase hex"),
    ({"expires": "tomorrow"}, "UTC time"),
    ({"golden": "yes"}, "'golden'"),
])
def test_invalid_fields_are_named(changes, words):
    with pytest.raises(BundleFormatError, match=words):
        Manifest.from_json(_doc(**changes))


def test_not_json():
    with pytest.raises(BundleFormatError, match="not valid JSON"):
        Manifest.from_json(b"\xff\xfe")
    with pytest.raises(BundleFormatError, match="JSON object"):
        Manifest.from_json(b"[1]")
