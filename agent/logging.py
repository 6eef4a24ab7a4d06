"""Agent logging: plain lines for journald, and a filter that keeps keys and tokens out of every line.

The filter sits on the handlers, not on loggers, so it also sees records propagated from the Azure IoT SDK's
and paho's own loggers (a logger-level filter would miss records created by child loggers). It redacts what
a secret looks like (SAS signatures, SharedAccessKey=..., PEM private keys, Authorization headers) and any
exact secret the agent registered with ``register_secret``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading

REDACTED = "<redacted>"

_PATTERNS = [
    # SAS tokens: the signature is the secret; keep sr/se so a log still says which token expired when.
    (re.compile(r"(sig=)[^&\s\"',;]+", re.IGNORECASE), r"\1" + REDACTED),
    (re.compile(r"(SharedAccessKey=)[^;\s\"',]+", re.IGNORECASE), r"\1" + REDACTED),
    (re.compile(r"(\"?(?:primaryKey|secondaryKey|symmetricKey|password|authenticationKey)\"?\s*[:=]\s*\"?)"
                r"[^\"',;\s}]+", re.IGNORECASE), r"\1" + REDACTED),
    # An Authorization header as a header line or printed inside a dict ({'Authorization': 'Bearer x'}).
    (re.compile(r"(Authorization['\"]?\s*[:=]?\s*['\"]?\s*(?:SharedAccessSignature|Bearer|Basic)?\s*)[^\s'\",}]+",
                re.IGNORECASE), r"\1" + REDACTED),
    # Any field named like a key or token ("key", "token", "sas_token", "deviceKey"...) with a long value:
    # over-redacting a harmless field costs little, a leaked key costs the device's identity.
    (re.compile(r"(\"?\b[\w-]*(?:key|token)\"?\s*[:=]\s*\"?)[A-Za-z0-9+/=_\-.%]{8,}", re.IGNORECASE), r"\1" + REDACTED),
    (re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?(-----END \1PRIVATE KEY-----|\Z)", re.DOTALL),
     "-----BEGIN PRIVATE KEY----- " + REDACTED + " -----END PRIVATE KEY-----"),
]

_secrets: set[str] = set()
_secrets_lock = threading.Lock()

# Loggers of the libraries under the agent; they log connection details (the SDK logs its username and
# sometimes token fragments at DEBUG), so they get their own level and always go through the filter.
LIBRARY_LOGGERS = ("azure.iot.device", "paho", "urllib3", "msrest")


def register_secret(secret: str | bytes) -> None:
    """Redact this exact value (a key, a token) wherever it appears in a log line from now on."""
    text = secret.decode(errors="replace") if isinstance(secret, bytes) else secret
    if len(text) >= 8:   # shorter strings would redact ordinary words
        with _secrets_lock:
            _secrets.add(text)


def redact(text: str) -> str:
    """``text`` with every known secret and everything secret-shaped replaced by <redacted>."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class SecretFilter(logging.Filter):
    """Rewrites each record's message (and traceback text) with secrets redacted; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:   # a malformed record is logged as its raw template rather than lost
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message`` under systemd (journald reads the prefix as the level), else a timestamp."""

    _PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def __init__(self, journal: bool) -> None:
        super().__init__("%(name)s: %(message)s" if journal else "%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.journal:
            return text
        priority = self._PRIORITY.get(record.levelno, 6)
        # Continuation lines (tracebacks) carry the prefix too, so the journal keeps their level.
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def configure(level: str = "info", stream=None) -> logging.Handler:
    """Send the agent's logs to stdout (journald under systemd) through the secret filter.

    Replaces handlers the root logger already has, adds the filter to any other handler found later by
    ``install_filter``, and keeps the SDK's and paho's loggers at WARNING unless the agent logs at debug.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JournalFormatter(journal=bool(os.environ.get("JOURNAL_STREAM"))))
    handler.addFilter(SecretFilter())
    root.addHandler(handler)
    set_level(level)
    return handler


def set_level(level: str) -> None:
    """Change the agent's log level at run time (the twin and `roost` methods use this)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")
    logging.getLogger().setLevel(numeric)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else logging.WARNING)


def install_filter() -> None:
    """Put the secret filter on every handler of the root logger (for handlers added by others)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, SecretFilter) for f in handler.filters):
            handler.addFilter(SecretFilter())
