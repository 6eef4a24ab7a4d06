"""Board profiles: every shipped profile loads, and every malformed profile names file, key and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from hal.board import BoardProfile, ProfileError, board_names, load_board, parse_board

SHIPPED = ["pico-w", "rpi-3b", "rpi-4b", "rpi-5", "rpi-zero-2w"]
RPI4B = (Path(__file__).resolve().parents[3] / "boards" / "rpi-4b.toml").read_text()
PICO = (Path(__file__).resolve().parents[3] / "boards" / "pico-w.toml").read_text()


def test_board_names_lists_the_shipped_profiles() -> None:
    assert board_names() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_loads(name: str) -> None:
    board = load_board(name)
    assert isinstance(board, BoardProfile)
    assert board.name == name
    assert board.path.endswith(f"{name}.toml")
    assert board.sensors, "a shipped profile without sensors demonstrates nothing"
    for spec in board.sensors:
        assert spec.bus in board.buses


def test_rpi4b_carries_the_reference_sensors() -> None:
    board = load_board("rpi-4b")
    i2c = {(s.driver, s.address) for s in board.sensors if s.bus == "i2c1"}
    assert {("bme280", 0x76), ("sht4x", 0x44), ("ads1115", 0x48)} <= i2c
    assert board.buses["i2c1"].device == "/dev/i2c-1"
    pms = board.sensor("particles")
    assert pms.driver == "pms5003" and pms.bus == "serial0" and pms.address is None
    serial0 = board.bus("serial0")
    assert (serial0.kind, serial0.device, serial0.baudrate) == ("uart", "/dev/serial0", 9600)
    assert board.status_led == 17 and board.button == 27
    assert board.boot_backend == "rpi-tryboot" and board.tpm_device == "/dev/tpmrm0"
    assert board.sensor("climate").options == {"temperature_oversampling": 2, "pressure_oversampling": 4,
                                               "humidity_oversampling": 1, "filter": 0}


def test_a_gps_sits_on_a_second_uart() -> None:
    board = load_board("rpi-5")
    gps = board.sensor("position")
    assert gps.driver == "nmea"
    uarts = [b for b in board.buses.values() if b.kind == "uart"]
    assert len(uarts) >= 2
    assert board.bus(gps.bus).baudrate == 9600 and gps.bus != "serial0"


def test_pico_w_is_a_micropython_board_with_pins() -> None:
    board = load_board("pico-w")
    assert board.runtime == "micropython"
    i2c0 = board.bus("i2c0")
    assert (i2c0.id, i2c0.sda, i2c0.scl, i2c0.freq, i2c0.device) == (0, 4, 5, 400000, None)
    uart0 = board.bus("uart0")
    assert (uart0.tx, uart0.rx, uart0.baudrate) == (0, 1, 9600)
    assert board.tpm_device is None and board.boot_backend == "none"


def test_a_profile_loads_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "my-board.toml"
    path.write_text(RPI4B.replace('name = "rpi-4b"', 'name = "my-board"'))
    board = load_board(str(path))
    assert board.name == "my-board" and board.path == str(path)


def test_lookups_name_what_exists() -> None:
    board = load_board("rpi-4b")
    with pytest.raises(KeyError, match="i2c1, serial0"):
        board.bus("i2c0")
    with pytest.raises(KeyError, match="climate, humidity, analog, particles"):
        board.sensor("co2")


def _load_text(tmp_path: Path, text: str) -> ProfileError:
    path = tmp_path / "board.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as caught:
        load_board(str(path))
    error = caught.value
    assert error.path == str(path)
    assert str(error).startswith(f"{path}: {error.key}: ")
    return error


# (what is wrong, replace this, with this, key named, words the expectation must contain)
MALFORMED = [
    ("not TOML", "[board]", "[board", "(file)", "TOML"),
    ("typo in a section", "[gpio]", "[gpios]", "gpios", "one of: board, buses, gpio"),
    ("unknown runtime", 'runtime = "linux"', 'runtime = "rtos"', "board.runtime", "linux, micropython"),
    ("missing description", 'description = "Raspberry Pi 4 Model B"', "", "board.description", "a string"),
    ("bad board name", 'name = "rpi-4b"', 'name = "Pi 4"', "board.name", "lower-case"),
    ("unknown bus kind", 'kind = "i2c"', 'kind = "spi"', "buses.i2c1.kind", "i2c, uart"),
    ("device outside /dev", 'device = "/dev/i2c-1"', 'device = "i2c-1"', "buses.i2c1.device", "/dev/"),
    ("uart without baud rate", "baudrate = 9600", "", "buses.serial0.baudrate", "an integer"),
    ("baud rate as text", "baudrate = 9600", 'baudrate = "9600"', "buses.serial0.baudrate", "an integer"),
    ("unknown bus key", 'device = "/dev/i2c-1"', 'device = "/dev/i2c-1"\nspeed = 400000', "buses.i2c1.speed",
     "kind, device"),
    ("pin as text", "status_led = 17", 'status_led = "17"', "gpio.status_led", "an integer from 0 to 27"),
    ("pin out of range", "status_led = 17", "status_led = 40", "gpio.status_led", "from 0 to 27"),
    ("pin used twice", "button = 27", "button = 17", "gpio.button", "one role per pin"),
    ("unknown driver", 'driver = "bme280"', 'driver = "bme680"', "sensors[0].driver", "ads1115, bme280, nmea"),
    ("unknown bus", 'bus = "i2c1"\naddress = 0x76', 'bus = "i2c0"\naddress = 0x76', "sensors[0].bus",
     "i2c1, serial0"),
    ("address as text", "address = 0x76", 'address = "0x76"', "sensors[0].address", "an integer from 0x03"),
    ("address the chip cannot have", "address = 0x76", "address = 0x40", "sensors[0].address", "0x76, 0x77"),
    ("duplicate id", 'id = "humidity"', 'id = "climate"', "sensors[1].id", "a different id"),
    ("interval zero", "interval_s = 5", "interval_s = 0", "sensors[2].interval_s", "greater than 0"),
    ("interval as text", "interval_s = 5", 'interval_s = "5s"', "sensors[2].interval_s", "greater than 0"),
    ("unknown option", "filter = 0 }", "filtering = 0 }", "sensors[0].options.filtering", "filter, humidity"),
    ("option out of range", "filter = 0 }", "filter = 3 }", "sensors[0].options.filter", "0, 2, 4, 8, 16"),
    ("options not a table", 'options = { precision = "high" }', 'options = "high"', "sensors[1].options",
     "a table"),
    ("unknown sensor key", 'id = "humidity"', 'id = "humidity"\nport = 1', "sensors[1].port", "id, driver"),
    ("unknown boot backend", 'backend = "rpi-tryboot"', 'backend = "grub"', "boot.backend", "rpi-tryboot, uboot"),
    ("relative TPM device", 'device = "/dev/tpmrm0"', 'device = "tpmrm0"', "tpm.device", "/dev/tpmrm0"),
    ("sensors not an array", "[[sensors]]\nid = \"climate\"", "[sensorz]\nid = \"climate\"", "sensorz",
     "one of: board"),
]


@pytest.mark.parametrize(("problem", "old", "new", "key", "expected"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_profiles_name_the_key(tmp_path: Path, problem: str, old: str, new: str, key: str,
                                         expected: str) -> None:
    assert old in RPI4B, f"test case {problem!r} no longer matches rpi-4b.toml"
    error = _load_text(tmp_path, RPI4B.replace(old, new, 1))
    assert error.key == key
    assert expected in error.expected, error.expected


def test_two_sensors_on_one_address(tmp_path: Path) -> None:
    extra = '\n[[sensors]]\nid = "second"\ndriver = "sht4x"\nbus = "i2c1"\naddress = 0x44\n'
    error = _load_text(tmp_path, RPI4B + extra)
    assert error.key == "sensors[4].address"
    assert "already sensor 'humidity'" in error.problem


def test_uart_sensor_with_an_address(tmp_path: Path) -> None:
    text = RPI4B.replace('bus = "serial0"', 'bus = "serial0"\naddress = 0x10')
    error = _load_text(tmp_path, text)
    assert error.key == "sensors[3].address" and "no address" in error.expected


def test_i2c_driver_on_a_uart(tmp_path: Path) -> None:
    text = RPI4B.replace('driver = "pms5003"', 'driver = "sht4x"\naddress = 0x45').replace(
        'options = { mode = "active" }', "")
    error = _load_text(tmp_path, text)
    assert error.key == "sensors[3].bus" and "'i2c'" in error.expected


def test_micropython_bus_needs_its_pins(tmp_path: Path) -> None:
    error = _load_text(tmp_path, PICO.replace("sda = 4\n", ""))
    assert error.key == "buses.i2c0.sda" and "from 0 to 28" in error.expected
    error = _load_text(tmp_path, PICO.replace("scl = 5", "scl = 5\ndevice = \"/dev/i2c-0\""))
    assert error.key == "buses.i2c0.device"


def test_tpm_on_a_micropython_board(tmp_path: Path) -> None:
    error = _load_text(tmp_path, PICO + '\n[tpm]\ndevice = "/dev/tpmrm0"\n')
    assert error.key == "tpm.device" and "no [tpm] table" in error.expected


def test_no_buses(tmp_path: Path) -> None:
    start = RPI4B.index("[buses.i2c1]")
    end = RPI4B.index("[gpio]")
    error = _load_text(tmp_path, RPI4B[:start] + RPI4B[end:].split("[[sensors]]")[0])
    assert error.key == "buses"


def test_unknown_board_name_lists_the_boards() -> None:
    with pytest.raises(ProfileError) as caught:
        load_board("rpi-9")
    assert caught.value.key == "(name)"
    assert "rpi-4b" in caught.value.expected and "pico-w" in caught.value.expected


def test_not_a_name_and_not_a_path() -> None:
    with pytest.raises(ProfileError, match="not a board name"):
        load_board("Rpi 4")


def test_missing_file() -> None:
    with pytest.raises(ProfileError) as caught:
        load_board("/nonexistent/board.toml")
    assert caught.value.key == "(file)" and "no such file" in caught.value.problem


def test_parse_board_without_a_file() -> None:
    data = {"board": {"name": "x", "description": "d", "runtime": "linux"},
            "buses": {"i2c1": {"kind": "i2c", "device": "/dev/i2c-1"}}}
    board = parse_board(data)
    assert board.sensors == [] and board.gpio == {} and board.boot_backend == "none"
    assert board.path == "<profile>"
