"""Runtime-neutral fakes for driver tests: an I2C bus of register files, a UART fed on a schedule, a pin.

They behave like MicroPython's ``machine`` classes (a missing I2C device raises ``OSError(5)``, as
the rp2 port does for a NACK), so the drivers' own fault mapping is exercised. Works on CPython
and under MicroPython; no pytest here.
"""

from hal.clock import ManualClock


def raises(exc_type, func, *args, **kwargs):
    """Call ``func`` and return the exception of type ``exc_type`` it raised; fail if it raised none."""
    try:
        func(*args, **kwargs)
    except exc_type as exc:
        return exc
    raise AssertionError("expected %s from %r" % (exc_type.__name__, func))


def approx(a, b, tolerance):
    return abs(a - b) <= tolerance


class RegisterDevice:
    """A part with 256 8-bit registers and an auto-incrementing register pointer.

    ``on_write(reg, data)`` is called after a register write; ``on_read(reg, n)`` before a read,
    so a test can model a part that changes state as it is driven.
    """

    def __init__(self, registers=None):
        self.regs = bytearray(256)
        if registers:
            for reg in registers:
                value = registers[reg]
                if isinstance(value, int):
                    self.regs[reg] = value
                else:
                    self.regs[reg : reg + len(value)] = bytes(value)
        self.writes = []
        self.on_write = None
        self.on_read = None

    def read_mem(self, reg, n):
        if self.on_read is not None:
            self.on_read(reg, n)
        return bytes(self.regs[reg : reg + n])

    def write_mem(self, reg, data):
        self.writes.append((reg, bytes(data)))
        self.regs[reg : reg + len(data)] = bytes(data)
        if self.on_write is not None:
            self.on_write(reg, bytes(data))

    def write_raw(self, data):
        # A plain write sets the register pointer, then writes the rest, like most register parts.
        if len(data) > 1:
            self.write_mem(data[0], data[1:])
        else:
            self.pointer = data[0]

    def read_raw(self, n):
        return self.read_mem(getattr(self, "pointer", 0), n)


class WordDevice(RegisterDevice):
    """A part with 16-bit big-endian registers (ADS1115 style), stored in ``words``."""

    def __init__(self, words):
        super().__init__()
        self.words = dict(words)
        self.word_writes = []

    def read_mem(self, reg, n):
        if self.on_read is not None:
            self.on_read(reg, n)
        value = self.words.get(reg, 0)
        return bytes([value >> 8, value & 0xFF])[:n]

    def write_mem(self, reg, data):
        value = (data[0] << 8) | data[1]
        self.word_writes.append((reg, value))
        self.words[reg] = value
        if self.on_write is not None:
            self.on_write(reg, value)


class FakeI2C:
    """``machine.I2C`` over a dict of address -> device. Unknown addresses NACK with OSError(5)."""

    def __init__(self, devices=None):
        self.devices = devices or {}
        self.log = []

    def _device(self, addr):
        device = self.devices.get(addr)
        if device is None:
            raise OSError(5)
        return device

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        data = self._device(addr).read_mem(memaddr, len(buf))
        self.log.append(("read_mem", addr, memaddr, len(buf)))
        for i in range(len(buf)):
            buf[i] = data[i]

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        self.log.append(("write_mem", addr, memaddr, bytes(buf)))
        self._device(addr).write_mem(memaddr, buf)

    def readfrom_into(self, addr, buf, stop=True):
        data = self._device(addr).read_raw(len(buf))
        self.log.append(("read", addr, len(buf)))
        for i in range(len(buf)):
            buf[i] = data[i]

    def readfrom(self, addr, nbytes, stop=True):
        buf = bytearray(nbytes)
        self.readfrom_into(addr, buf)
        return bytes(buf)

    def writeto(self, addr, buf, stop=True):
        self.log.append(("write", addr, bytes(buf)))
        self._device(addr).write_raw(bytes(buf))
        return len(buf)

    def scan(self):
        return sorted(self.devices)


class FakeUART:
    """``machine.UART`` whose incoming bytes arrive on a schedule of the shared ManualClock.

    ``deliver(data, at_ms=None)`` queues bytes (now, or when the clock reaches ``at_ms``);
    ``on_write(data)`` lets a test answer commands. Everything written is kept in ``written``.
    """

    def __init__(self, clock):
        self.clock = clock
        self.rx = bytearray()
        self.pending = []
        self.written = []
        self.on_write = None

    def deliver(self, data, at_ms=None):
        if at_ms is None:
            self.rx += bytes(data)
        else:
            self.pending.append((at_ms, bytes(data)))

    def _due(self):
        now = self.clock.ticks_ms()
        keep = []
        for at_ms, data in self.pending:
            if self.clock.ticks_diff(now, at_ms) >= 0:
                self.rx += data
            else:
                keep.append((at_ms, data))
        self.pending = keep

    def any(self):
        self._due()
        return len(self.rx)

    def read(self, nbytes=None):
        self._due()
        if not self.rx:
            return None
        if nbytes is None or nbytes > len(self.rx):
            nbytes = len(self.rx)
        data = bytes(self.rx[:nbytes])
        self.rx = self.rx[nbytes:]
        return data

    def write(self, buf):
        data = bytes(buf)
        self.written.append(data)
        if self.on_write is not None:
            self.on_write(data)
        return len(data)


class FakePin:
    """``machine.Pin`` that records what it was driven to and fires irq handlers on ``drive``."""

    IN = 0
    OUT = 1
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8

    def __init__(self, level=0):
        self.level = level
        self.history = []
        self.handler = None
        self.trigger = 0

    def value(self, x=None):
        if x is None:
            return self.level
        self.level = 1 if x else 0
        self.history.append(self.level)
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=12):
        self.handler = handler
        self.trigger = trigger

    def drive(self, level):
        """An external level change (a button, a sensor's ready line)."""
        old = self.level
        self.level = 1 if level else 0
        if self.handler is None or old == self.level:
            return
        edge = self.IRQ_RISING if self.level else self.IRQ_FALLING
        if self.trigger & edge:
            self.handler(self)


def clock(start_ms=0):
    return ManualClock(start_ms=start_ms)
