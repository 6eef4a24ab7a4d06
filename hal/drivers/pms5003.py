"""Plantower PMS5003 particulate matter sensor over a UART (9600 8N1).

The part sends 32-byte frames: 0x42 0x4D, a 16-bit length (28), thirteen 16-bit big-endian data
words and a 16-bit checksum (the sum of the 30 bytes before it). It answers a mode change with an
8-byte frame of length 4. The parser finds frames in a byte stream, checks each checksum and
resynchronises one byte after the start of a bad frame, so noise never costs more than the frames
it touches. In active mode the part streams a frame every 0.2-2.3 s; in passive mode it sends one
when asked (command 0xE2). Data sheet: Plantower PMS5003 series V2.3.
"""

# ruff: noqa: B904  -- MicroPython prints a warning for every "raise ... from ..."; drivers avoid it.

from hal.drivers.compat import const, default_clock
from hal.errors import ChipIdError, CRCError, FrameError, SensorTimeout, SettingError

_START1 = const(0x42)
_START2 = const(0x4D)
_DATA_LENGTH = const(28)
_ACK_LENGTH = const(4)
FRAME_SIZE = const(32)
_BUF_SIZE = const(96)

_CMD_READ = const(0xE2)
_CMD_MODE = const(0xE1)  # data 0 = passive, 1 = active
_CMD_SLEEP = const(0xE4)  # data 0 = sleep, 1 = wake

# Names of data words 0..11 (word 12 is reserved).
FIELDS = (
    "pm1_0_cf1", "pm2_5_cf1", "pm10_cf1",
    "pm1_0", "pm2_5", "pm10",
    "count_0_3", "count_0_5", "count_1_0", "count_2_5", "count_5_0", "count_10",
)


def command(cmd, data):
    """The 7-byte host command frame: 0x42 0x4D cmd 0x00 data, then the 16-bit sum of those five bytes."""
    frame = bytearray(7)
    frame[0] = _START1
    frame[1] = _START2
    frame[2] = cmd
    frame[3] = 0
    frame[4] = data
    total = _START1 + _START2 + cmd + data
    frame[5] = total >> 8
    frame[6] = total & 0xFF
    return frame


class PMS5003:
    """PMS5003 on ``uart``. ``mode`` is "active" (the part streams) or "passive" (frames on request).

    ``read()`` returns the newest frame's mass concentrations (ug/m3, standard atmosphere and CF=1)
    and particle counts (per 0.1 L of air). ``timeout_ms`` bounds the wait for a frame.
    """

    CHIP = "PMS5003"
    BUS = "uart"
    UNITS = {
        "pm1_0": "ug/m3", "pm2_5": "ug/m3", "pm10": "ug/m3",
        "pm1_0_cf1": "ug/m3", "pm2_5_cf1": "ug/m3", "pm10_cf1": "ug/m3",
        "count_0_3": "1/0.1L", "count_0_5": "1/0.1L", "count_1_0": "1/0.1L",
        "count_2_5": "1/0.1L", "count_5_0": "1/0.1L", "count_10": "1/0.1L",
    }
    OPTIONS = {"mode": ("active", "passive"), "timeout_ms": (1000, 2500, 3000, 5000, 10000)}

    def __init__(self, uart, clock=None, mode="active", timeout_ms=3000):
        if mode not in ("active", "passive"):
            raise SettingError("mode must be 'active' or 'passive', got %r" % (mode,))
        if not isinstance(timeout_ms, int) or timeout_ms <= 0:
            raise SettingError("timeout_ms must be a positive number of milliseconds, got %r" % (timeout_ms,))
        self.uart = uart
        self.clock = default_clock(clock)
        self.mode = mode
        self.timeout_ms = timeout_ms
        self._buf = bytearray(_BUF_SIZE)
        self._n = 0
        self._words = [0] * 13
        # Counters, for diagnostics: frames accepted, checksum failures, bytes skipped while resyncing.
        self.frames = 0
        self.checksum_errors = 0
        self.skipped_bytes = 0
        self._mode_sent = False

    # -- stream parsing ------------------------------------------------------------------------------------

    def _drop(self, count):
        n = self._n
        if count >= n:
            self._n = 0
            return
        self._buf[0 : n - count] = self._buf[count:n]
        self._n = n - count

    def feed(self, data):
        """Add received bytes; return True if at least one valid data frame was completed (see ``values``)."""
        got = False
        i = 0
        while i < len(data):
            room = _BUF_SIZE - self._n
            take = min(room, len(data) - i)
            self._buf[self._n : self._n + take] = data[i : i + take]
            self._n += take
            i += take
            if self._parse():
                got = True
        return got

    def _parse(self):
        got = False
        buf = self._buf
        while True:
            n = self._n
            # Find a start sequence; everything before it is noise.
            start = 0
            while start < n and not (buf[start] == _START1 and (start + 1 == n or buf[start + 1] == _START2)):
                start += 1
            if start:
                self.skipped_bytes += start
                self._drop(start)
                n = self._n
            if n < 4:
                return got
            length = (buf[2] << 8) | buf[3]
            if length != _DATA_LENGTH and length != _ACK_LENGTH:
                self.skipped_bytes += 1
                self._drop(1)
                continue
            size = 4 + length
            if n < size:
                return got
            total = 0
            for k in range(size - 2):
                total += buf[k]
            if total != (buf[size - 2] << 8) | buf[size - 1]:
                self.checksum_errors += 1
                self.skipped_bytes += 1
                self._drop(1)  # rescan from the next byte: a false start may hide a real one
                continue
            if length == _DATA_LENGTH:
                for w in range(13):
                    self._words[w] = (buf[4 + 2 * w] << 8) | buf[5 + 2 * w]
                self.frames += 1
                got = True
            self._drop(size)

    def values(self):
        """The last valid frame as a dict of numbers."""
        out = {}
        for i in range(12):
            out[FIELDS[i]] = self._words[i]
        return out

    # -- talking to the part ----------------------------------------------------------------------------------

    def send(self, cmd, data):
        self.uart.write(command(cmd, data))

    def set_mode(self, mode):
        if mode not in ("active", "passive"):
            raise SettingError("mode must be 'active' or 'passive', got %r" % (mode,))
        self.mode = mode
        self.send(_CMD_MODE, 1 if mode == "active" else 0)
        self._mode_sent = True

    def sleep(self):
        """Stop the fan and laser (the part then ignores everything but wake)."""
        self.send(_CMD_SLEEP, 0)

    def wake(self):
        """Start the fan again; data are stable about 30 s later."""
        self.send(_CMD_SLEEP, 1)

    def _drain(self):
        """Feed everything already received to the parser; return the number of bytes."""
        received = 0
        while True:
            waiting = self.uart.any()
            if not waiting:
                return received
            chunk = self.uart.read(min(waiting, _BUF_SIZE))
            if not chunk:
                return received
            received += len(chunk)
            self.feed(chunk)

    def read(self):
        """The newest complete frame, waiting for one up to ``timeout_ms``."""
        if not self._mode_sent:
            self.set_mode(self.mode)
        errors = self.checksum_errors
        skipped = self.skipped_bytes
        frames = self.frames
        received = self._drain()
        if self.mode == "passive":
            # Anything that queued up is stale: ask for a fresh frame.
            self.send(_CMD_READ, 0)
            frames = self.frames
        elif self.frames != frames:
            # Frames that queued up since the last read: the parser kept the newest.
            return self.values()
        clock = self.clock
        deadline = clock.ticks_add(clock.ticks_ms(), self.timeout_ms)
        while True:
            waiting = self.uart.any()
            if waiting:
                chunk = self.uart.read(min(waiting, _BUF_SIZE))
                if chunk:
                    received += len(chunk)
                    self.feed(chunk)
                    if self.frames != frames:
                        return self.values()
                    continue
            if clock.ticks_diff(clock.ticks_ms(), deadline) >= 0:
                break
            clock.sleep_ms(10)
        if self.checksum_errors != errors:
            raise CRCError("%s: %d frame(s) failed their checksum in %d ms: noise on the line?"
                           % (self.CHIP, self.checksum_errors - errors, self.timeout_ms))
        if received:
            raise FrameError("%s: %d bytes but no valid frame in %d ms (%d skipped): wrong baud rate or another device?"
                             % (self.CHIP, received, self.timeout_ms, self.skipped_bytes - skipped))
        raise SensorTimeout("%s: nothing received in %d ms: check the TX wire, power (5 V) and the SET pin"
                            % (self.CHIP, self.timeout_ms))

    def identify(self):
        """Wait for one valid frame; bytes that never form one mean another device is on this port."""
        try:
            self.read()
        except FrameError as exc:
            raise ChipIdError(self.CHIP, "PMS5003 frames", "other data", "%s" % (exc,))
        return self.CHIP
