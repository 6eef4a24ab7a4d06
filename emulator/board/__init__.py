"""The board emulator: a Raspberry Pi's sensors, buses and pins, emulated below the product's own code.

- ``platform.EmulatedPlatform``: the ``emulated`` platform (entry point in ``roost.platforms``), the
  ``linux`` platform with its hardware hooks pointed at an ``EmulatedBoard``.
- ``board.EmulatedBoard``: a board profile's parts on their buses, the GPIO header, the clock, faults.
- ``i2c_ioctl`` / ``smbus``: i2c-dev ioctls decoded in-process under a real ``smbus2.SMBus``.
- ``i2c_bus`` and ``models``: register-level BME280, SHT4x, ADS1115; PMS5003 and NMEA GPS on ``uart`` ptys.
- ``signals``, ``faults``, ``clock``, ``gpio``; ``readings_table`` renders readings for the demo.

See docs/emulator-board.md.
"""
