"""An NMEA 0183 GPS receiver over a UART (GGA and RMC sentences, any talker: GP, GN, GL, GA ...).

Sentences are ``$ttSSS,field,...*hh\\r\\n`` where ``hh`` is the XOR of every character between ``$``
and ``*``. The reader collects lines into a preallocated buffer, drops lines that are too long
(NMEA allows 82 characters), checks each checksum and keeps the newest GGA and RMC. Coordinates
are parsed in integer micro-degrees before they become floats, so no precision is lost to
MicroPython's single-precision floats on the way.
"""

# ruff: noqa: B904  -- MicroPython prints a warning for every "raise ... from ..."; drivers avoid it.

from hal.drivers.compat import const, default_clock
from hal.errors import CRCError, FrameError, SensorTimeout, SettingError

_MAX_LINE = const(96)
_KNOTS_TO_MM_S = const(514444)  # 1 knot = 0.514444 m/s, scaled by 1e6


def checksum(body):
    """XOR of the bytes of ``body`` (the text between ``$`` and ``*``)."""
    value = 0
    for b in body:
        value ^= b
    return value


def parse_sentence(line):
    """Split a sentence (bytes, with or without CR LF) into its fields after checking the checksum.

    Returns a list of str: the sentence type ("GGA", "RMC" ...; the whole address for proprietary
    sentences such as "PMTK001") then its fields. Raises FrameError on
    a malformed line and CRCError on a checksum mismatch.
    """
    line = bytes(line).strip()
    if len(line) < 9 or line[0] != 0x24:  # "$"
        raise FrameError("not an NMEA sentence: %r" % (line[:20],))
    star = line.rfind(b"*")
    if star < 0 or star != len(line) - 3:
        raise FrameError("NMEA sentence without a *hh checksum: %r" % (line[:20],))
    body = line[1:star]
    try:
        expected = int(line[star + 1 :], 16)
    except ValueError:
        raise FrameError("NMEA checksum is not hexadecimal: %r" % (line[star:],))
    actual = checksum(body)
    if actual != expected:
        raise CRCError("NMEA checksum mismatch (sentence says %02X, computed %02X): %r" % (expected, actual, line[:20]))
    try:
        fields = str(body, "ascii").split(",")
    except UnicodeError:
        raise FrameError("NMEA sentence is not ASCII")
    address = fields[0]
    if address[:1] == "P":
        return fields  # proprietary ($PMTK..., $PUBX...): kept whole, never mistaken for GGA/RMC
    if len(address) != 5:
        raise FrameError("NMEA address field %r is not talker + sentence type" % (address,))
    fields[0] = address[2:]
    return fields


def _micro(text, scale_digits=6):
    """A decimal string as an integer scaled by 10**scale_digits (``"12.5"`` -> 12500000)."""
    negative = text.startswith("-")
    if negative:
        text = text[1:]
    parts = text.split(".", 1)
    whole = parts[0]
    frac = parts[1] if len(parts) > 1 else ""
    if not (whole or frac) or (whole and not whole.isdigit()) or (frac and not frac.isdigit()):
        raise FrameError("not a number: %r" % (text,))
    value = int(whole or "0") * 10**scale_digits + int((frac + "0" * scale_digits)[:scale_digits] or "0")
    return -value if negative else value


def parse_coordinate(value, hemisphere):
    """NMEA ``dddmm.mmmm`` + hemisphere -> signed micro-degrees (None if the field is empty)."""
    if not value:
        return None
    whole = value.split(".", 1)[0]
    if len(whole) < 3:
        raise FrameError("coordinate %r is not [d]ddmm.mmmm" % (value,))
    degrees = int(whole[:-2])
    minutes_e6 = _micro(value[len(whole) - 2 :])
    if minutes_e6 >= 60000000:
        raise FrameError("coordinate %r has 60 or more minutes" % (value,))
    micro = degrees * 1000000 + (minutes_e6 + 30) // 60
    if hemisphere in ("S", "W"):
        return -micro
    if hemisphere not in ("N", "E"):
        raise FrameError("hemisphere %r is not N, S, E or W" % (hemisphere,))
    return micro


class NMEAGPS:
    """A GPS receiver on ``uart`` that talks NMEA 0183.

    ``read()`` waits (up to ``timeout_ms``) for a GGA and an RMC sentence and returns the fix:
    ``fix`` (GGA quality: 0 none, 1 GPS, 2 DGPS ...), ``satellites``, and when there is a fix
    ``latitude``/``longitude`` (degrees), ``altitude`` (m), ``hdop``, ``speed`` (m/s), ``course`` (deg).
    """

    CHIP = "NMEA-GPS"
    BUS = "uart"
    UNITS = {
        "fix": "", "satellites": "", "latitude": "deg", "longitude": "deg", "altitude": "m",
        "hdop": "", "speed": "m/s", "course": "deg",
    }
    OPTIONS = {"timeout_ms": (1000, 2500, 3000, 5000, 10000)}

    def __init__(self, uart, clock=None, timeout_ms=2500):
        if not isinstance(timeout_ms, int) or timeout_ms <= 0:
            raise SettingError("timeout_ms must be a positive number of milliseconds, got %r" % (timeout_ms,))
        self.uart = uart
        self.clock = default_clock(clock)
        self.timeout_ms = timeout_ms
        self._line = bytearray(_MAX_LINE)
        self._n = 0
        self._overlong = False
        self.gga = None
        self.rmc = None
        self.sentences = 0
        self.checksum_errors = 0
        self.frame_errors = 0

    def feed(self, data):
        """Add received bytes; return the number of valid sentences completed."""
        done = 0
        for b in data:
            if b == 0x24:  # "$" always starts a new sentence, even mid-line (resync after noise)
                self._n = 0
                self._overlong = False
            if b == 0x0A:  # "\n"
                if self._n and not self._overlong:
                    if self._sentence(memoryview(self._line)[: self._n]):
                        done += 1
                elif self._overlong:
                    self.frame_errors += 1
                self._n = 0
                self._overlong = False
                continue
            if self._n < _MAX_LINE:
                self._line[self._n] = b
                self._n += 1
            else:
                self._overlong = True
        return done

    def _sentence(self, line):
        try:
            fields = parse_sentence(line)
            kind = fields[0]
            if kind == "GGA":
                self.gga = self._parse_gga(fields)
            elif kind == "RMC":
                self.rmc = self._parse_rmc(fields)
            else:
                return False  # valid but not one we use (GSV, VTG ...)
        except CRCError:
            self.checksum_errors += 1
            return False
        except (FrameError, ValueError, IndexError):
            self.frame_errors += 1
            return False
        self.sentences += 1
        return True

    def _parse_gga(self, f):
        # GGA: time, lat, N/S, lon, E/W, quality, satellites, hdop, altitude, M, geoid, M, age, station
        if len(f) < 15:
            raise FrameError("GGA sentence has %d fields, expected 15" % len(f))
        out = {"fix": int(f[6] or "0"), "satellites": int(f[7] or "0")}
        if out["fix"]:
            out["latitude_e6"] = parse_coordinate(f[2], f[3])
            out["longitude_e6"] = parse_coordinate(f[4], f[5])
            if f[8]:
                out["hdop_e6"] = _micro(f[8])
            if f[9]:
                out["altitude_e6"] = _micro(f[9])
        return out

    def _parse_rmc(self, f):
        # RMC: time, status A/V, lat, N/S, lon, E/W, speed (knots), course, date, variation, E/W [, mode]
        if len(f) < 12:
            raise FrameError("RMC sentence has %d fields, expected at least 12" % len(f))
        out = {"valid": f[2] == "A"}
        if out["valid"]:
            out["latitude_e6"] = parse_coordinate(f[3], f[4])
            out["longitude_e6"] = parse_coordinate(f[5], f[6])
            if f[7]:
                out["speed_mm_s"] = _micro(f[7]) * _KNOTS_TO_MM_S // 1000000000
            if f[8]:
                out["course_e6"] = _micro(f[8])
        return out

    def values(self):
        """The newest fix as a dict of numbers (see the class docstring)."""
        gga = self.gga or {"fix": 0, "satellites": 0}
        rmc = self.rmc or {"valid": False}
        out = {"fix": gga["fix"], "satellites": gga["satellites"]}
        position = gga if gga["fix"] else (rmc if rmc["valid"] else None)
        if position is not None:
            out["latitude"] = position["latitude_e6"] / 1000000
            out["longitude"] = position["longitude_e6"] / 1000000
        if gga["fix"]:
            if "altitude_e6" in gga:
                out["altitude"] = gga["altitude_e6"] / 1000000
            if "hdop_e6" in gga:
                out["hdop"] = gga["hdop_e6"] / 1000000
        if rmc["valid"]:
            if "speed_mm_s" in rmc:
                out["speed"] = rmc["speed_mm_s"] / 1000
            if "course_e6" in rmc:
                out["course"] = rmc["course_e6"] / 1000000
        return out

    def read(self):
        """Wait for a fresh GGA and RMC (up to ``timeout_ms``) and return the fix."""
        self.gga = None
        self.rmc = None
        errors = self.checksum_errors
        frame_errors = self.frame_errors
        received = 0
        clock = self.clock
        deadline = clock.ticks_add(clock.ticks_ms(), self.timeout_ms)
        while True:
            waiting = self.uart.any()
            if waiting:
                chunk = self.uart.read(min(waiting, 256))
                if chunk:
                    received += len(chunk)
                    self.feed(chunk)
                    if self.gga is not None and self.rmc is not None:
                        return self.values()
                    continue
            if clock.ticks_diff(clock.ticks_ms(), deadline) >= 0:
                break
            clock.sleep_ms(10)
        if self.gga is not None or self.rmc is not None:
            return self.values()  # one of the two is enough for a (partial) fix
        if self.checksum_errors != errors:
            raise CRCError("NMEA: %d sentence(s) failed their checksum in %d ms: noise or wrong baud rate?"
                           % (self.checksum_errors - errors, self.timeout_ms))
        if received:
            raise FrameError("NMEA: %d bytes but no GGA/RMC sentence in %d ms (%d malformed): "
                             "wrong baud rate or not a GPS?"
                             % (received, self.timeout_ms, self.frame_errors - frame_errors))
        raise SensorTimeout("NMEA: nothing received in %d ms: check the GPS TX wire, power and baud rate"
                            % (self.timeout_ms,))

    def identify(self):
        """Wait for one valid GGA or RMC sentence."""
        from hal.errors import ChipIdError

        try:
            self.read()
        except FrameError as exc:
            raise ChipIdError(self.CHIP, "NMEA sentences", "other data", "%s" % (exc,))
        return self.CHIP
