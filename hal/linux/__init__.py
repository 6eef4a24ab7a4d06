"""The ``linux`` platform: machine-API ports over smbus2, pyserial and gpiozero."""
