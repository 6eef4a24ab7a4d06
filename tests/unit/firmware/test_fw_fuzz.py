"""Hostile bytes in the header, manifest or signature area are refused with a message, never a crash."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.bundle import HEADER, MAGIC, Signature, decode_signatures, read_envelope, verify_envelope
from firmware.errors import BundleFormatError, SignatureError
from firmware.manifest import Manifest

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda children: st.lists(children) | st.dictionaries(st.text(), children),
                           max_leaves=20)


def refused(action) -> str:
    """The message of the expected refusal; any other exception escapes and fails the test."""
    try:
        action()
    except (BundleFormatError, SignatureError) as exc:
        return str(exc)
    return ""


@given(st.binary(max_size=300))
@settings(max_examples=150, deadline=None)
def test_random_headers(data):
    assert refused(lambda: read_envelope(lambda offset, length: data[offset:offset + length]))


@given(st.binary(max_size=200), st.binary(max_size=200))
@settings(max_examples=150, deadline=None)
def test_random_manifest_and_signature_area(manifest, area):
    data = HEADER.pack(MAGIC, max(1, len(manifest)), len(area)) + (manifest or b"{") + area

    def attempt():
        verify_envelope(read_envelope(lambda offset, length: data[offset:offset + length]), {}, 1)

    assert refused(attempt)


@given(st.dictionaries(st.sampled_from(["format", "compatible", "version", "security_version", "expires",
                                        "image_size", "block_size", "blocks", "golden", "description", "created"]),
                       json_values))
@settings(max_examples=200, deadline=None)
def test_random_manifest_documents(doc):
    assert refused(lambda: Manifest.from_json(json.dumps(doc).encode()))


@given(json_values)
@settings(max_examples=150, deadline=None)
def test_random_signature_documents(doc):
    raw = json.dumps(doc).encode()
    result: list = []
    message = refused(lambda: result.append(decode_signatures(raw)))
    assert message or all(isinstance(s, Signature) for s in result[0])
