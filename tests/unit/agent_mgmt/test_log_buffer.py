"""The log buffer behind diagnostics bundles and lastError redacts with the agent's own definition of a secret."""

from __future__ import annotations

import logging

import pytest

from agent.logging import register_secret
from agent.management.log_buffer import LogBuffer

PRIVATE_KEY = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIm0c2VjcmV0\n-----END EC PRIVATE KEY-----"


@pytest.fixture
def buffer():
    handler = LogBuffer(capacity=10)
    logger = logging.getLogger("roost.test.log_buffer")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield handler, logger
    logger.removeHandler(handler)


@pytest.mark.parametrize("line, secret", [
    ("token SharedAccessSignature sr=hub%2Fdevices%2Fpi&sig=c2VjcmV0c2lnbmF0dXJl&se=1", "c2VjcmV0c2lnbmF0dXJl"),
    ("HostName=hub;DeviceId=pi;SharedAccessKey=c2VjcmV0a2V5MTIz", "c2VjcmV0a2V5MTIz"),
    ('method payload {"key": "bmV3ZGV2aWNla2V5"}', "bmV3ZGV2aWNla2V5"),
    ("retry with token=abcdefghijklmnop", "abcdefghijklmnop"),
    ('enrollment {"primaryKey": "cHJpbWFyeWtleQ"}', "cHJpbWFyeWtleQ"),
    ("request header Authorization: Bearer eyJhbGciOiJIUzI1NiJ9", "eyJhbGciOiJIUzI1NiJ9"),
    (f"loaded {PRIVATE_KEY}", "MHcCAQEEIIm0c2VjcmV0"),
])
def test_secret_shapes_never_reach_the_buffer(buffer, line, secret):
    handler, logger = buffer
    logger.error("upload failed: %s", line)
    assert secret not in handler.text() and secret not in handler.last_error
    assert "upload failed" in handler.text() and "<redacted>" in handler.text()


def test_a_registered_secret_is_redacted_in_bundles_too(buffer):
    # One definition: what the agent registers for the journal's filter is kept out of bundles as well.
    handler, logger = buffer
    register_secret("plain-looking-device-secret")
    logger.warning("state: plain-looking-device-secret loaded")
    assert "plain-looking-device-secret" not in handler.text() and "state:" in handler.text()


def test_ordinary_lines_are_kept_as_they_are(buffer):
    handler, logger = buffer
    logger.info("outbox holds %d readings; key rotation scheduled", 12)
    assert handler.text().rstrip().endswith("outbox holds 12 readings; key rotation scheduled")
    assert handler.last_error is None
