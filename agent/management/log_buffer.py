"""The recent log lines kept in memory, for diagnostics bundles and the ``lastError`` health field.

Lines pass ``agent.logging.redact`` before they are stored, the same definition of a secret the journal's
filter uses (SAS signatures, SharedAccessKey=, PEM private keys, Authorization headers, and every exact
secret the agent registered), so keys and tokens never reach a bundle even when some library logged them.
"""

from __future__ import annotations

import collections
import logging
import time

from agent.logging import redact

__all__ = ["LogBuffer", "redact"]  # a bundle's text is redacted exactly as the log is


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
