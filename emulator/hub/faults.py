"""Quotas, throttling and injected faults of one emulated hub.

Throttling follows the real service: when devices send faster than the configured rate IoT Hub does not
reject messages, it slows down acknowledgements (back-pressure), so a client with 20 messages in flight
simply gets slower. The daily quota, in contrast, is a hard limit: once today's 4 KB message units are used
up, a device that sends is disconnected (IoT Hub error 403002, IotHubQuotaExceeded). Connection attempts
above the configured rate are refused with CONNACK 3 (server unavailable).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

MAX_MESSAGE_BYTES = 256 * 1024


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; time from a monotonic clock."""

    def __init__(self, rate: float, burst: float | None = None, monotonic=time.monotonic) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.tokens = self.burst
        self.monotonic = monotonic
        self.stamp = monotonic()

    def _refill(self) -> None:
        now = self.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def try_take(self) -> bool:
        self._refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait_time(self) -> float:
        """Take a token, returning how long the caller must wait for it to be earned (0 if available)."""
        self._refill()
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


# IoT Hub's published limits per tier: (daily messages per unit, D2C sends/s and connections/s as
# (floor, per unit)). Metering counts 4 KB units for S1-S3 and 0.5 KB units for F1, emulated as 4 KB here.
TIERS: dict[str, tuple[int, tuple[float, float], tuple[float, float]]] = {
    "F1": (8_000, (100.0, 0.0), (100.0, 0.0)),
    "S1": (400_000, (100.0, 12.0), (100.0, 12.0)),
    "S2": (6_000_000, (120.0, 120.0), (120.0, 120.0)),
    "S3": (300_000_000, (0.0, 6_000.0), (0.0, 6_000.0)),
}


@dataclass
class Quotas:
    """Limits of one hub; None means unlimited. Change fields at run time (effective on next use)."""

    d2c_per_second: float | None = None
    d2c_burst: int | None = None
    daily_message_units: int | None = None
    connections_per_second: float | None = None
    max_message_bytes: int = MAX_MESSAGE_BYTES
    _d2c: TokenBucket | None = field(default=None, repr=False)
    _connects: TokenBucket | None = field(default=None, repr=False)

    @classmethod
    def tier(cls, name: str, units: int = 1) -> Quotas:
        """The daily quota and throttles of an IoT Hub tier (F1, S1, S2, S3) with ``units`` units."""
        if name.upper() not in TIERS:
            raise ValueError(f"unknown IoT Hub tier {name!r}; choose one of {', '.join(TIERS)}")
        if units < 1 or (name.upper() == "F1" and units != 1):
            raise ValueError("a hub has at least one unit (F1: exactly one)")
        daily, (d2c_floor, d2c_unit), (conn_floor, conn_unit) = TIERS[name.upper()]
        return cls(d2c_per_second=max(d2c_floor, d2c_unit * units), daily_message_units=daily * units,
                   connections_per_second=max(conn_floor, conn_unit * units))

    async def d2c_permit(self) -> bool:
        """Wait until one more device-to-cloud message may be acknowledged; True when it was throttled."""
        if not self.d2c_per_second:
            return False
        if self._d2c is None or self._d2c.rate != self.d2c_per_second:
            self._d2c = TokenBucket(self.d2c_per_second, self.d2c_burst)
        wait = self._d2c.wait_time()
        if wait > 0:
            await asyncio.sleep(wait)
            return True
        return False

    def connection_permitted(self) -> bool:
        if not self.connections_per_second:
            return True
        if self._connects is None or self._connects.rate != self.connections_per_second:
            self._connects = TokenBucket(self.connections_per_second)
        return self._connects.try_take()


@dataclass
class Faults:
    """Faults injected into one hub, keyed by device id (``None`` = every device where it makes sense)."""

    withheld_pubacks: dict[str, int] = field(default_factory=dict)
    delays: dict[str | None, float] = field(default_factory=dict)
    refusals: dict[str | None, int | None] = field(default_factory=dict)   # None count: until cleared
    held_replies: dict[str, int] = field(default_factory=dict)   # device id -> replies waiting out a delay now
    _hub: object = field(default=None, repr=False)
    _waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=set, repr=False)

    def drop(self, device_id: str) -> bool:
        """Close the device's connection now, as a network failure would; False if it is not connected."""
        return self._hub.disconnect(device_id, "connection dropped by fault injection")  # type: ignore[attr-defined]

    def withhold_puback(self, device_id: str, count: int = 1) -> None:
        """Store but do not acknowledge the device's next ``count`` telemetry messages."""
        if count < 1:
            raise ValueError("count must be at least 1")
        self.withheld_pubacks[device_id] = self.withheld_pubacks.get(device_id, 0) + count

    def delay(self, device_id: str | None, seconds: float) -> None:
        """Delay every reply (PUBACK, twin and method traffic) to one device, or to all with None; 0 clears."""
        if seconds < 0:
            raise ValueError("a delay cannot be negative")
        if seconds:
            self.delays[device_id] = seconds
        else:
            self.delays.pop(device_id, None)
        self._delays_changed()

    async def hold(self, device_id: str) -> None:
        """Wait out the reply delay injected for ``device_id`` (none: return at once).

        The delay is re-read whenever it changes, so lowering or clearing it releases replies already held:
        a test can inject a long delay, see the reply held (``held_replies``), then release it, with no race
        between the delay and its check.
        """
        if not self.delay_for(device_id):
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiter = (loop, asyncio.Event())
        self._waiters.add(waiter)
        self.held_replies[device_id] = self.held_replies.get(device_id, 0) + 1
        try:
            while (remaining := started + self.delay_for(device_id) - loop.time()) > 0:
                waiter[1].clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await waiter[1].wait()
        finally:
            self._waiters.discard(waiter)
            left = self.held_replies.get(device_id, 1) - 1
            if left:
                self.held_replies[device_id] = left
            else:
                self.held_replies.pop(device_id, None)

    def _delays_changed(self) -> None:
        # Faults are changed from the service API, the admin CLI or a test thread: wake held replies on their loop.
        for loop, event in list(self._waiters):
            with contextlib.suppress(RuntimeError):   # that loop is already closed
                loop.call_soon_threadsafe(event.set)

    def expire_token(self, device_id: str) -> bool:
        """Disconnect the device as if its SAS token expired (it must reconnect with a fresh one)."""
        return self._hub.disconnect(device_id, "SAS token expired (fault injection)")  # type: ignore[attr-defined]

    def refuse_connections(self, device_id: str | None, count: int | None = None) -> None:
        """Refuse the next ``count`` CONNECTs (CONNACK 3) of a device (all with None); count None: until cleared."""
        if count is not None and count < 1:
            raise ValueError("count must be at least 1 (or None to refuse until cleared)")
        self.refusals[device_id] = count

    def take_refusal(self, device_id: str) -> bool:
        key = device_id if device_id in self.refusals else None
        if key not in self.refusals:
            return False
        left = self.refusals[key]
        if left is not None:
            if left <= 1:
                del self.refusals[key]
            else:
                self.refusals[key] = left - 1
        return True

    def clear(self) -> None:
        """Remove every fault; replies held by a delay go out now."""
        self.withheld_pubacks.clear()
        self.delays.clear()
        self.refusals.clear()
        self._delays_changed()

    def delay_for(self, device_id: str) -> float:
        return self.delays.get(device_id, self.delays.get(None, 0.0))

    def take_withheld(self, device_id: str) -> bool:
        left = self.withheld_pubacks.get(device_id, 0)
        if not left:
            return False
        if left == 1:
            del self.withheld_pubacks[device_id]
        else:
            self.withheld_pubacks[device_id] = left - 1
        return True
