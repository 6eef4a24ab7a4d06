"""The recent log lines kept in memory, for diagnostics bundles and the ``lastError`` health field.

Lines pass a redaction step before they are stored: SAS tokens, keys and connection-string secrets never
reach a bundle even when some library logged them.
"""

from __future__ import annotations

import collections
import logging
import re
import time

_SECRETS = [
    (re.compile(r"SharedAccessSignature\s+[^\s\"']+"), "SharedAccessSignature <redacted>"),
    (re.compile(r"(SharedAccessKey=)[^;\s\"']+"), r"\1<redacted>"),
    (re.compile(r"(sig=)[^&\s\"']+"), r"\1<redacted>"),
    (re.compile(r"(\"?(?:key|primaryKey|secondaryKey|password|token)\"?\s*[:=]\s*\"?)[A-Za-z0-9+/=_\-.]{8,}"),
     r"\1<redacted>"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
     "<private key redacted>"),
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class LogBuffer(logging.Handler):
    """A bounded ring of formatted, redacted log lines; remembers the last ERROR."""

    def __init__(self, capacity: int = 2000, level: int = logging.DEBUG) -> None:
        super().__init__(level)
        self.lines: collections.deque[str] = collections.deque(maxlen=capacity)
        self.last_error: str | None = None
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = redact(self.format(record))
        except Exception:
            self.handleError(record)
            return
        self.lines.append(line)
        if record.levelno >= logging.ERROR:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
            self.last_error = redact(f"{stamp} {record.name}: {record.getMessage()}")[:500]

    def text(self) -> str:
        return "\n".join(self.lines) + ("\n" if self.lines else "")
