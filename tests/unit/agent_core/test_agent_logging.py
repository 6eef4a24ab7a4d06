"""agent.logging: no key or token reaches a log line, whichever logger wrote it."""

from __future__ import annotations

import io
import logging

import pytest

from agent import logging as agent_logging
from agent.identity.credentials import key_signer, sas_token

KEY = b"0123456789abcdef0123456789abcdef"


@pytest.fixture
def captured():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    handler = agent_logging.configure("debug", stream=stream)
    yield stream
    root.removeHandler(handler)
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def test_sas_signature_is_redacted_but_the_resource_stays(captured):
    token = sas_token("hub.example/devices/d1", key_signer(KEY), 1_900_000_000)
    signature = token.split("sig=")[1].split("&")[0]
    logging.getLogger("azure.iot.device.common.mqtt_transport").debug("connecting with password %s", token)
    out = captured.getvalue()
    assert signature not in out
    assert "sig=<redacted>" in out and "se=1900000000" in out


@pytest.mark.parametrize("line, secret", [
    ("HostName=h;DeviceId=d;SharedAccessKey=c2VjcmV0a2V5c2VjcmV0a2V5", "c2VjcmV0a2V5c2VjcmV0a2V5"),
    ('{"primaryKey": "QUJDREVGR0hJSktMTU5PUA=="}', "QUJDREVGR0hJSktMTU5PUA=="),
    ("Authorization: SharedAccessSignature sr=x&sig=abc%2Bdef&se=1", "abc%2Bdef"),
    ("headers {'Authorization': 'Bearer eyJhbGciOiJIUzI1NiJ9'}", "eyJhbGciOiJIUzI1NiJ9"),
    ('{"Authorization": "SharedAccessSignature sr=h&sig=c2lnbmF0dXJl&se=9"}', "c2lnbmF0dXJl"),
    ('rotate with {"key": "bmV3LWRldmljZS1rZXk="}', "bmV3LWRldmljZS1rZXk="),
    ("sas_token=SharedAccessSignatureXYZ123", "SharedAccessSignatureXYZ123"),
    ("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----", "MHcCAQEEIB"),
])
def test_secret_shapes_are_redacted(captured, line, secret):
    logging.getLogger("paho.mqtt.client").warning(line)
    assert secret not in captured.getvalue()
    assert agent_logging.REDACTED in captured.getvalue()


def test_registered_secrets_are_redacted_anywhere_even_in_tracebacks(captured):
    agent_logging.register_secret("s3cr3t-device-key-material")
    try:
        raise ValueError("bad key s3cr3t-device-key-material")
    except ValueError:
        logging.getLogger("agent.test").exception("failed with %s", "s3cr3t-device-key-material")
    out = captured.getvalue()
    assert "s3cr3t-device-key-material" not in out
    assert out.count(agent_logging.REDACTED) >= 2 and "Traceback" in out


def test_short_strings_are_not_registered(captured):
    agent_logging.register_secret("abc")
    logging.getLogger("agent.test").info("abc is fine")
    assert "abc is fine" in captured.getvalue()


def test_library_loggers_are_quiet_unless_debugging(captured):
    agent_logging.set_level("info")
    assert logging.getLogger("azure.iot.device").level == logging.WARNING
    assert logging.getLogger().level == logging.INFO
    with pytest.raises(ValueError, match="unknown log level"):
        agent_logging.set_level("loud")


def test_journal_prefix_carries_the_level():
    formatter = agent_logging.JournalFormatter(journal=True)
    record = logging.LogRecord("agent", logging.ERROR, __file__, 1, "line one\nline two", None, None)
    assert formatter.format(record) == "<3>agent: line one\n<3>line two"
