"""identify through the hub blinks the real status LED pin of the emulated board (gpiozero MockFactory)."""

from __future__ import annotations

from mgmtrig import RunningAgent, config, enroll_symmetric, new_key, reported, wait_for, write_secret

DEVICE = "pi-led-1"


def _identify(emu, seconds: int):
    result = emu.call(emu.emulator.hub.invoke_method(DEVICE, "identify", {"seconds": seconds}, timeout_s=20))
    return result.status, result.payload


def test_identify_toggles_the_status_led_pin_then_shows_the_mode_again(emu, tmp_path):
    key = new_key()
    enroll_symmetric(emu, DEVICE, key)
    cfg = config(tmp_path, emu, {"method": "symmetric", "registration_id": DEVICE,
                                 "symmetric_key_file": str(write_secret(tmp_path / "dev.key", key))})
    running = RunningAgent(cfg)
    try:
        wait_for(lambda: running.connected, what="agent connected")
        led = running.daemon.management.led
        gpio = running.daemon.platform.emulator.gpio      # the board's side of the wire: what the pin really did
        assert led.pin_number == gpio.number("status_led")
        wait_for(lambda: gpio.level("status_led") == 1, what="the LED lit ('auto': the agent runs)")

        start = len(gpio.history("status_led"))
        assert _identify(emu, 1) == (200, {"blinking": 1.0, "pin": gpio.number("status_led")})
        wait_for(lambda: not led.identifying, what="the blinking to end")
        blink = "".join(map(str, gpio.history("status_led")[start:]))
        assert "0101" in blink and blink.endswith("1")     # blinked; lit again afterwards, as 'auto' wants
        assert gpio.level("status_led") == 1

        # A fleet that keeps its LEDs dark: identify blinks, then the LED goes back off.
        emu.call(emu.emulator.hub.update_twin(DEVICE, desired={"statusLed": "off"}))
        wait_for(lambda: reported(emu, DEVICE).get("statusLed", {}).get("value") == "off", what="statusLed acked")
        assert gpio.level("status_led") == 0
        start = len(gpio.history("status_led"))
        assert _identify(emu, 1)[0] == 200
        wait_for(lambda: not led.identifying, what="the blinking to end")
        blink = "".join(map(str, gpio.history("status_led")[start:]))
        assert "1010" in blink and blink.endswith("0")
        assert gpio.level("status_led") == 0
    finally:
        running.stop()
