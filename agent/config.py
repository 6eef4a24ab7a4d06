"""The agent's configuration: one TOML file, frozen dataclasses per section, strict checking.

``/etc/roost/roost.toml`` by default (``--config PATH`` or ``$ROOST_CONFIG`` override it). Every key has a
default and a one-line description in its field's metadata; docs/configuration.md lists the same keys, and a
test keeps the two in step. Unknown keys and wrong types are errors naming the key path and the fix, so a typo
never silently falls back to a default.

    config = load_config("/etc/roost/roost.toml")      # raises ConfigError listing every problem
    config.telemetry.batch_max_bytes                   # 4096

Relative file paths in the file are resolved against the directory of the config file, so a config and its
key files can travel together (tests, the demo, a provisioning bundle).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import pwd
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

DEFAULT_PATH = Path("/etc/roost/roost.toml")
ENV_VAR = "ROOST_CONFIG"
AGENT_USER = "roost"

IDENTITY_METHODS = ("symmetric", "x509", "tpm", "connection-string")
PLATFORMS = ("linux", "emulated")
LOG_LEVELS = ("debug", "info", "warning", "error")
TRANSPORTS = ("mqtt", "mqtt-ws")
MQTT_PORT, WEBSOCKET_PORT = 8883, 443


def _key(default: Any, doc: str, *, choices: tuple[str, ...] = (), minimum: float | None = None,
         maximum: float | None = None, path: bool = False, secret: bool = False) -> Any:
    """A config key: its default plus what docs and checks need to know about it."""
    meta = {"doc": doc, "choices": choices, "min": minimum, "max": maximum, "path": path, "secret": secret}
    if isinstance(default, (dict, list)):
        raise TypeError("mutable defaults are not config keys")
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DeviceConfig:
    board: str = _key("rpi-4b", "board profile: a name from boards/ (rpi-zero-2w, rpi-3b, rpi-4b, rpi-5, pico-w) "
                                "or a path to a board TOML file")
    platform: str = _key("linux", "hardware implementation: `linux` (real buses) or `emulated` (board emulator)",
                         choices=PLATFORMS)
    state_dir: str = _key("/var/lib/roost", "where the agent keeps its state (outbox, DPS cache, update state)",
                          path=True)
    log_level: str = _key("info", "log verbosity: debug, info, warning or error", choices=LOG_LEVELS)


@dataclass(frozen=True)
class IdentityConfig:
    method: str = _key("tpm", "how the device proves who it is: symmetric, x509, tpm or connection-string",
                       choices=IDENTITY_METHODS)
    provisioning_host: str = _key("global.azure-devices-provisioning.net",
                                  "DPS endpoint host name, optionally with :port")
    id_scope: str = _key("", "DPS ID scope (0ne...); required for symmetric, x509 and tpm")
    registration_id: str = _key("", "DPS registration id; empty means the device's host name "
                                    "(for tpm: derived from the endorsement key)")
    symmetric_key_file: str = _key("", "file holding the base64 device key of an individual enrollment",
                                   path=True, secret=True)
    group_key_file: str = _key("", "file holding the base64 group key of a group enrollment; the device key is "
                                   "derived from it and the registration id", path=True, secret=True)
    cert_file: str = _key("", "X.509 device certificate chain (PEM)", path=True)
    key_file: str = _key("", "X.509 device private key (PEM)", path=True, secret=True)
    connection_string_file: str = _key("", "file holding a device connection string (development only)",
                                       path=True, secret=True)
    tpm_tcti: str = _key("device:/dev/tpmrm0", "TPM transport (TCTI): device:/dev/tpmrm0 or swtpm:host=..,port=..")
    provisioning_ca_file: str = _key("", "trust anchor PEM for DPS; empty means the system trust store",
                                     path=True)


@dataclass(frozen=True)
class HubConfig:
    gateway_hostname: str = _key("", "connect through this transparent gateway (IoT Edge) instead of the hub")
    transport: str = _key("mqtt", "`mqtt` (MQTT over TLS, port 8883) or `mqtt-ws` (MQTT over WebSockets, port 443, "
                                  "for networks that let only HTTPS out); for the hub, the gateway and DPS",
                          choices=TRANSPORTS)
    ca_file: str = _key("", "trust anchor PEM for the hub or gateway; empty means the system trust store",
                        path=True)
    model_id: str = _key("dtmi:roost:device;1", "IoT Plug and Play model id announced when connecting")
    sas_ttl_s: int = _key(3600, "lifetime of each SAS token the agent signs, seconds (at least 180: the SDK asks "
                                "for a new token 120 s before expiry)", minimum=1)
    renew_before_s: int = _key(300, "renew the SAS token this many seconds before it expires", minimum=10)
    connect_timeout_s: float = _key(30.0, "give up one connection attempt after this many seconds", minimum=1)
    send_timeout_s: float = _key(30.0, "give up waiting for one PUBACK after this many seconds", minimum=1)
    keepalive_s: int = _key(60, "MQTT keep-alive interval, seconds", minimum=5, maximum=1740)
    backoff_base_s: float = _key(1.0, "first reconnect delay; doubles each failed attempt (with jitter)",
                                 minimum=0.01)
    backoff_cap_s: float = _key(300.0, "longest reconnect delay", minimum=0.1)

    @property
    def websockets(self) -> bool:
        return self.transport == "mqtt-ws"

    @property
    def port(self) -> int:
        """Where the hub, gateway and DPS are reached over MQTT with this transport."""
        return WEBSOCKET_PORT if self.websockets else MQTT_PORT


@dataclass(frozen=True)
class SensorSettings:
    enabled: bool = _key(True, "sample this sensor")
    interval_s: float = _key(0.0, "sampling interval; 0 means telemetry.interval_s", minimum=0)
    deadband: float = _key(0.0, "drop a reading unless some value moved by more than this since the last one "
                                "sent (0 sends every reading)", minimum=0)
    rate_limit_s: float = _key(0.0, "send at most one reading per this many seconds (0: no limit)", minimum=0)
    window_s: float = _key(0.0, "aggregate readings over windows this long into min/mean/max/count "
                                "(0: send raw readings)", minimum=0)


@dataclass(frozen=True)
class TelemetryConfig:
    interval_s: float = _key(10.0, "default sampling interval for every sensor, seconds", minimum=0.01)
    batch_max_bytes: int = _key(4096, "pack readings into messages up to this size (IoT Hub bills 4 KB units)",
                                minimum=256, maximum=262144)
    batch_max_delay_s: float = _key(2.0, "send a partly filled batch after this many seconds", minimum=0,
                                    maximum=5)
    outbox_path: str = _key("", "SQLite outbox file; empty means <state_dir>/outbox.sqlite", path=True)
    outbox_max_bytes: int = _key(64 * 1024 * 1024, "outbox size bound; beyond it the oldest readings are dropped "
                                                   "(and counted)", minimum=64 * 1024)
    max_in_flight: int = _key(16, "messages awaiting PUBACK at once while draining (paho allows 20; the rest "
                                   "is left for twin and method traffic)", minimum=1, maximum=20)
    # Filled from the [telemetry.sensors.<id>] tables: sensor id -> SensorSettings.
    sensors: Mapping[str, SensorSettings] = field(default_factory=lambda: MappingProxyType({}),
                                                  metadata={"doc": "per-sensor settings, see below", "table": True})


@dataclass(frozen=True)
class HealthConfig:
    interval_s: float = _key(60.0, "how often health is evaluated and reported", minimum=1)
    cpu_temp_max_c: float = _key(80.0, "alert when the SoC is hotter than this, Celsius")
    disk_free_min_mb: float = _key(64.0, "alert when the state directory's file system has less free space",
                                   minimum=0)
    memory_max_mb: float = _key(160.0, "alert when the agent's resident memory grows beyond this (it runs at about "
                                       "41 MB; well past that means a leak)", minimum=1)
    offline_max_s: float = _key(900.0, "alert (locally, queued) when the hub was unreachable this long", minimum=1)
    outbox_fill_max: float = _key(0.8, "alert when the outbox is fuller than this fraction of its bound",
                                  minimum=0, maximum=1)
    attestation_url: str = _key("", "TPM health attestation service (https://host:port); empty turns it off. "
                                    "Needs identity.method = tpm")
    attestation_ca_file: str = _key("", "trust anchor PEM for the attestation service; empty means the system "
                                        "trust store", path=True)


@dataclass(frozen=True)
class MethodsConfig:
    disabled: tuple[str, ...] = _key((), "direct methods this device refuses (answered with status 403)")
    timeout_s: float = _key(30.0, "longest time a direct method handler may run", minimum=1)


@dataclass(frozen=True)
class ManagementConfig:
    factory_reset_confirmation: str = _key("factory-reset", "the payload `confirm` value the factoryReset method "
                                                            "requires, so a stray call cannot wipe the device")
    diagnostics_max_bytes: int = _key(4 * 1024 * 1024, "largest diagnostics bundle uploaded", minimum=1024)
    diagnostics_include_logs: bool = _key(True, "include recent agent logs in diagnostics bundles "
                                                "(keys and tokens are always filtered out)")
    reboot_command: str = _key("systemctl reboot", "command run for the reboot methods")
    # Keys this module does not know are kept here for agent.management, which checks them itself.
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}),
                                     metadata={"doc": "other keys, checked by agent.management", "open": True})


@dataclass(frozen=True)
class Config:
    device: DeviceConfig = field(default_factory=DeviceConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    methods: MethodsConfig = field(default_factory=MethodsConfig)
    management: ManagementConfig = field(default_factory=ManagementConfig)
    # The [update] table, checked by firmware.config.UpdateConfig; None when the file has none (no A/B updates).
    update: Any = None
    source: str = field(default="", compare=False)   # the file it came from, for messages

    @property
    def state_dir(self) -> Path:
        return Path(self.device.state_dir)

    @property
    def outbox_path(self) -> Path:
        return Path(self.telemetry.outbox_path) if self.telemetry.outbox_path else self.state_dir / "outbox.sqlite"

    def sensor(self, sensor_id: str) -> SensorSettings:
        """Settings for one sensor, with interval_s resolved against the telemetry default."""
        settings = self.telemetry.sensors.get(sensor_id, SensorSettings())
        if settings.interval_s <= 0:
            settings = dataclasses.replace(settings, interval_s=self.telemetry.interval_s)
        return settings


SECTIONS: dict[str, type] = {f.name: f.default_factory().__class__ for f in dataclasses.fields(Config)
                             if f.name not in ("source", "update")}
UPDATE_SECTION = "update"
# SDK: azure.iot.device's SasTokenStage raises on_new_sastoken_required this long before a token expires.
SDK_TOKEN_MARGIN_S = 120
MIN_SAS_TTL_S = 180         # leaves a token at least a minute of use before the SDK asks for the next one
MIN_RENEW_INTERVAL_S = 60   # renewing more often than once a minute is a reconnect loop in all but name


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file: which key, what is wrong, how to fix it."""

    key: str
    message: str
    fix: str = ""
    warning: bool = False   # warnings (e.g. loose permissions on a key file) do not stop the agent

    def __str__(self) -> str:
        text = f"{self.key}: {self.message}" if self.key else self.message
        return f"{text}; {self.fix}" if self.fix else text


class ConfigError(ValueError):
    """The config file cannot be used; ``problems`` lists every reason at once."""

    def __init__(self, problems: list[Problem], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(str(p) for p in problems))


def default_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """--config wins, then $ROOST_CONFIG, then /etc/roost/roost.toml."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(ENV_VAR) or DEFAULT_PATH)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and check a config file; raises ConfigError with every problem found (warnings are not raised)."""
    config, problems = check_config(path, check_files=False)
    errors = [p for p in problems if not p.warning]
    if errors or config is None:
        raise ConfigError(errors, str(default_path(path)))
    return config


def check_config(path: str | os.PathLike[str] | None = None, *,
                 check_files: bool = True) -> tuple[Config | None, list[Problem]]:
    """Check a config file: (config or None, problems). With ``check_files`` also look at the files it names."""
    source = default_path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [Problem("", f"config file {source} does not exist",
                              f"create it (see docs/configuration.md) or point --config / ${ENV_VAR} at yours")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem("", f"cannot read config file {source}: {exc}",
                              "check the file's permissions and that it is UTF-8 text")]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, [Problem("", f"{source} is not valid TOML: {exc}",
                              "fix the syntax at that line (strings need quotes, tables [brackets])")]
    config, problems = parse_config(data, base_dir=source.parent, source=str(source))
    if config is not None and check_files:
        problems += check_files_of(config)
    return config, problems


def parse_config(data: Mapping[str, Any], *, base_dir: Path | None = None,
                 source: str = "") -> tuple[Config | None, list[Problem]]:
    """Build a Config from parsed TOML; (None, problems) when any problem is an error."""
    problems: list[Problem] = []
    sections: dict[str, Any] = {}
    for name, value in data.items():
        if name == UPDATE_SECTION:
            continue
        if name not in SECTIONS:
            problems.append(_unknown(name, name, SECTIONS))
        elif not isinstance(value, dict):
            problems.append(Problem(name, f"must be a table, not {_type_name(value)}",
                                    f"write it as a [{name}] section"))
    for name, cls in SECTIONS.items():
        table = data.get(name, {})
        sections[name] = _parse_section(cls, table if isinstance(table, dict) else {}, name, base_dir, problems)
    update = None
    if UPDATE_SECTION in data:
        update = _parse_update(data[UPDATE_SECTION], sections["device"], problems)
    if all(v is not None for v in sections.values()) and (update is not None or UPDATE_SECTION not in data):
        config = Config(**sections, update=update, source=source)
        problems += _cross_checks(config)
    else:
        config = None
    if any(not p.warning for p in problems):
        return None, problems
    return config, problems


# Keys of [update] and what each must be; firmware.config.UpdateConfig converts and checks the rest.
_UPDATE_KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "board": (str, 'board = "rpi-4b"'), "slots": (dict, 'a [update.slots] table: a = "/dev/mmcblk0p5"'),
    "state_dir": (str, 'state_dir = "/var/lib/roost"'), "keys_dir": (str, 'keys_dir = "/etc/roost/keys"'),
    "boot": ((str, dict), 'an [update.boot] table: backend = "rpi-tryboot"'),
    "boot_options": (dict, "a table of the boot backend's options"),
    "max_failed_trials": (int, "max_failed_trials = 3"),
    "trial_deadline": ((int, float), "trial_deadline = 300"),
    "signature_threshold": (int, "signature_threshold = 1"),
    "min_security_version": (int, "min_security_version = 0"),
    "http_timeout": ((int, float), "http_timeout = 30"),
    "health_services": (list, 'health_services = ["roost.service"]'),
    "verify_first": (bool, "verify_first = false"),
}


def _parse_update(table: Any, device: DeviceConfig | None, problems: list[Problem]) -> Any:
    """The [update] table through firmware.config.UpdateConfig, its errors as problems with key paths."""
    from firmware.config import UpdateConfig
    from firmware.errors import FirmwareError

    if not isinstance(table, dict):
        problems.append(Problem(UPDATE_SECTION, f"must be a table, not {_type_name(table)}",
                                "write it as an [update] section (docs/updates.md, section 8)"))
        return None
    before = len(problems)
    for key, value in table.items():
        path = f"{UPDATE_SECTION}.{key}"
        if key not in _UPDATE_KEYS:
            problems.append(_unknown(path, key, _UPDATE_KEYS))
            continue
        kinds, example = _UPDATE_KEYS[key]
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            problems.append(Problem(path, f"has the wrong type ({_type_name(value)} {value!r})", f"write {example}"))
    slots = table.get("slots")
    for name, slot in slots.items() if isinstance(slots, dict) else ():
        if isinstance(slot, dict) and not isinstance(slot.get("path"), str):
            problems.append(Problem(f"{UPDATE_SECTION}.slots.{name}", "needs a path",
                                    f'write {name} = {{ path = "/dev/mmcblk0p5" }} or just {name} = "/dev/..."'))
        elif not isinstance(slot, (str, dict)):
            problems.append(Problem(f"{UPDATE_SECTION}.slots.{name}", f"must be a device path, not {slot!r}",
                                    f'write {name} = "/dev/mmcblk0p5"'))
    if len(problems) > before:
        return None
    state_dir = Path(device.state_dir) if device is not None else None
    try:
        return UpdateConfig.from_table(dict(table), state_dir=state_dir)
    except FirmwareError as exc:
        problems.append(Problem(_update_key_of(str(exc)), str(exc), "see docs/updates.md, section 8"))
    except (KeyError, TypeError, ValueError) as exc:
        problems.append(Problem(UPDATE_SECTION, f"cannot be used: {type(exc).__name__}: {exc}",
                                "see docs/updates.md, section 8"))
    return None


def _update_key_of(message: str) -> str:
    """The key path an UpdateConfig error is about, found in its message (the section when none is named)."""
    if "[update.slots]" in message:
        return f"{UPDATE_SECTION}.slots"
    for key in _UPDATE_KEYS:
        if f"{key} " in message or f"] {key}" in message or message.startswith(key):
            return f"{UPDATE_SECTION}.{key}"
    return UPDATE_SECTION


def _parse_section(cls: type, table: Mapping[str, Any], prefix: str, base_dir: Path | None,
                   problems: list[Problem]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    before = len(problems)
    for key, value in table.items():
        path = f"{prefix}.{key}"
        f = fields.get(key)
        if f is None or f.metadata.get("open"):
            if "extra" in fields and fields["extra"].metadata.get("open"):
                extra[key] = value
            else:
                problems.append(_unknown(path, key, {k: v for k, v in fields.items()
                                                     if not v.metadata.get("open")}))
            continue
        if f.metadata.get("table"):
            values[key] = _parse_sensors(value, path, base_dir, problems)
            continue
        values[key] = _coerce(f, value, path, base_dir, problems)
    if extra:
        values["extra"] = MappingProxyType(extra)
    if len(problems) > before:
        return None
    return cls(**values)


def parse_sensor_settings(table: Mapping[str, Any], base: SensorSettings | None = None,
                          key: str = "telemetry.sensors.<id>") -> SensorSettings:
    """Settings for one sensor from a mapping (a twin patch, a method payload) on top of ``base``.

    Raises ConfigError naming each bad key; nothing changes unless every key is valid.
    """
    if not isinstance(table, Mapping):
        raise ConfigError([Problem(key, f"must be an object of settings, not {_type_name(table)}",
                                   'send e.g. {"interval_s": 5}')])
    problems: list[Problem] = []
    parsed = _parse_section(SensorSettings, dict(table), key, None, problems)
    if problems or parsed is None:
        raise ConfigError(problems)
    if base is None:
        return parsed
    given = {k: getattr(parsed, k) for k in table}
    return dataclasses.replace(base, **given)


def _parse_sensors(value: Any, path: str, base_dir: Path | None, problems: list[Problem]) -> Any:
    if not isinstance(value, dict):
        problems.append(Problem(path, f"must be a table of sensors, not {_type_name(value)}",
                                f"write one [{path}.<sensor id>] section per sensor"))
        return MappingProxyType({})
    sensors: dict[str, SensorSettings] = {}
    for sensor_id, table in value.items():
        if not isinstance(table, dict):
            problems.append(Problem(f"{path}.{sensor_id}", f"must be a table, not {_type_name(table)}",
                                    f"write it as [{path}.{sensor_id}] with keys like interval_s = 5"))
            continue
        parsed = _parse_section(SensorSettings, table, f"{path}.{sensor_id}", base_dir, problems)
        if parsed is not None:
            sensors[sensor_id] = parsed
    return MappingProxyType(sensors)


def _coerce(f: dataclasses.Field, value: Any, path: str, base_dir: Path | None, problems: list[Problem]) -> Any:
    meta = f.metadata
    expected = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    default = f.default
    if expected == "bool":
        if not isinstance(value, bool):
            problems.append(Problem(path, f"must be true or false, not {value!r}",
                                    f"write {path.rsplit('.', 1)[-1]} = {'true' if default else 'false'}"))
            return default
        return value
    if expected in ("int", "float"):
        ok = isinstance(value, int) and not isinstance(value, bool)
        if expected == "float":
            ok = ok or (isinstance(value, float) and math.isfinite(value))
        if not ok:
            kind = "a whole number" if expected == "int" else "a number"
            problems.append(Problem(path, f"must be {kind}, not {_type_name(value)} {value!r}",
                                    f"write it without quotes, e.g. {path.rsplit('.', 1)[-1]} = {default!r}"))
            return default
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and value < lo:
            problems.append(Problem(path, f"{value!r} is below the minimum {lo!r}", f"use a value >= {lo!r}"))
        elif hi is not None and value > hi:
            problems.append(Problem(path, f"{value!r} is above the maximum {hi!r}", f"use a value <= {hi!r}"))
        return float(value) if expected == "float" else value
    if expected == "str":
        if not isinstance(value, str):
            problems.append(Problem(path, f"must be a string, not {_type_name(value)} {value!r}",
                                    f'put the value in quotes: {path.rsplit(".", 1)[-1]} = "{value}"'))
            return default
        choices = meta.get("choices") or ()
        if choices and value not in choices:
            close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(choices)}"
            problems.append(Problem(path, f"{value!r} is not one of {', '.join(choices)}", hint))
            return default
        if meta.get("path") and value and base_dir is not None:
            return str((base_dir / os.path.expanduser(value)).resolve())
        return value
    if expected.startswith("tuple"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(Problem(path, f"must be a list of strings, not {value!r}",
                                    f'write e.g. {path.rsplit(".", 1)[-1]} = ["reboot"]'))
            return default
        return tuple(value)
    raise TypeError(f"config field {path} has unsupported type {expected}")


def _cross_checks(config: Config) -> list[Problem]:
    """Rules that involve more than one key."""
    problems: list[Problem] = []
    ident = config.identity
    if ident.method in ("symmetric", "x509", "tpm") and not ident.id_scope:
        problems.append(Problem("identity.id_scope", f"is required when identity.method is {ident.method!r}",
                                "copy the ID scope from your DPS instance's overview page (it starts with 0ne)"))
    if ident.method == "symmetric" and bool(ident.symmetric_key_file) == bool(ident.group_key_file):
        problems.append(Problem("identity.symmetric_key_file",
                                "symmetric identity needs exactly one of symmetric_key_file and group_key_file",
                                "set symmetric_key_file for an individual enrollment or group_key_file "
                                "for a group enrollment, not both"))
    if ident.method == "x509":
        for name in ("cert_file", "key_file"):
            if not getattr(ident, name):
                problems.append(Problem(f"identity.{name}", "is required when identity.method is 'x509'",
                                        "point it at the device's PEM file"))
    if ident.method == "connection-string" and not ident.connection_string_file:
        problems.append(Problem("identity.connection_string_file",
                                "is required when identity.method is 'connection-string'",
                                "write the device connection string into a 0600 file and name it here"))
    hub = config.hub
    if hub.sas_ttl_s < MIN_SAS_TTL_S:
        problems.append(Problem("hub.sas_ttl_s", f"{hub.sas_ttl_s} s is too short: the IoT SDK asks for a new token "
                                f"{SDK_TOKEN_MARGIN_S} s before expiry, so the agent would renew (and re-authenticate) "
                                "almost continuously", f"use at least {MIN_SAS_TTL_S} (3600, the default, is usual)"))
    elif hub.renew_before_s < hub.sas_ttl_s \
            and hub.sas_ttl_s - max(hub.renew_before_s, SDK_TOKEN_MARGIN_S) < MIN_RENEW_INTERVAL_S:
        problems.append(Problem("hub.renew_before_s", f"with hub.sas_ttl_s = {hub.sas_ttl_s} the token would be "
                                f"renewed every {hub.sas_ttl_s - max(hub.renew_before_s, SDK_TOKEN_MARGIN_S)} s",
                                f"make renew_before_s at most {hub.sas_ttl_s - MIN_RENEW_INTERVAL_S} "
                                "(a tenth of sas_ttl_s is usual)"))
    if hub.renew_before_s < SDK_TOKEN_MARGIN_S and hub.sas_ttl_s >= MIN_SAS_TTL_S:
        problems.append(Problem("hub.renew_before_s", f"{hub.renew_before_s} s is below the {SDK_TOKEN_MARGIN_S} s "
                                "at which the IoT SDK already asks for a new token, so it has no effect",
                                f"use {SDK_TOKEN_MARGIN_S} or more", warning=True))
    if hub.renew_before_s >= hub.sas_ttl_s:
        problems.append(Problem("hub.renew_before_s", f"{hub.renew_before_s} is not shorter than hub.sas_ttl_s "
                                f"({hub.sas_ttl_s}), so every token would need renewal at once",
                                "make renew_before_s a fraction of sas_ttl_s, e.g. a tenth"))
    if hub.backoff_cap_s < hub.backoff_base_s:
        problems.append(Problem("hub.backoff_cap_s", f"{hub.backoff_cap_s} is below hub.backoff_base_s",
                                "make the cap at least the base delay"))
    if hub.model_id and not hub.model_id.startswith("dtmi:"):
        problems.append(Problem("hub.model_id", f"{hub.model_id!r} is not a DTDL model id",
                                "use the form dtmi:<org>:<name>;<version>, or empty for none"))
    health = config.health
    if health.attestation_url:
        if not health.attestation_url.startswith("https://"):
            problems.append(Problem("health.attestation_url", f"{health.attestation_url!r} is not an https URL",
                                    "use https://host:port of the attestation service, or empty to turn it off"))
        if ident.method != "tpm":
            problems.append(Problem("health.attestation_url", "health attestation needs identity.method = 'tpm' "
                                    f"(it is {ident.method!r})", "use a TPM identity, or leave attestation_url empty"))
    tel = config.telemetry
    if tel.outbox_max_bytes < 16 * tel.batch_max_bytes:
        problems.append(Problem("telemetry.outbox_max_bytes", f"{tel.outbox_max_bytes} bytes holds fewer than 16 "
                                "batches", f"raise it to at least {16 * tel.batch_max_bytes}"))
    return problems


def check_files_of(config: Config) -> list[Problem]:
    """The files a config names: do they exist, and are the secret ones private to the agent user?"""
    problems: list[Problem] = []
    ident = config.identity
    needed = {"symmetric": ("symmetric_key_file", "group_key_file"), "x509": ("cert_file", "key_file"),
              "connection-string": ("connection_string_file",), "tpm": ()}[ident.method]
    checks: list[tuple[str, str, bool]] = [(f"identity.{n}", getattr(ident, n), n != "cert_file") for n in needed]
    checks += [("identity.provisioning_ca_file", ident.provisioning_ca_file, False),
               ("hub.ca_file", config.hub.ca_file, False),
               ("health.attestation_ca_file", config.health.attestation_ca_file, False)]
    for key, value, secret in checks:
        if not value:
            continue
        try:
            st = os.stat(value)
        except FileNotFoundError:
            problems.append(Problem(key, f"file {value} does not exist", "create it or correct the path"))
            continue
        except OSError as exc:
            problems.append(Problem(key, f"cannot read {value}: {exc.strerror}",
                                    f"make it readable by the {AGENT_USER} user"))
            continue
        if not stat.S_ISREG(st.st_mode):
            problems.append(Problem(key, f"{value} is not a regular file", "point it at the file itself"))
            continue
        if secret:
            problems += _secret_file_warnings(key, value, st)
    return problems


def _agent_uid() -> int:
    """The user the agent runs as: this user, or the `roost` user when checking as root."""
    uid = os.geteuid()
    if uid == 0:
        try:
            return pwd.getpwnam(AGENT_USER).pw_uid
        except KeyError:
            return 0
    return uid


def _secret_file_warnings(key: str, path: str, st: os.stat_result) -> list[Problem]:
    problems = []
    if st.st_mode & 0o077:
        problems.append(Problem(key, f"{path} holds a secret but is readable by others "
                                f"(mode {stat.S_IMODE(st.st_mode):04o})", f"run: chmod 600 {path}", warning=True))
    want = _agent_uid()
    if st.st_uid != want:
        try:
            owner = pwd.getpwuid(want).pw_name
        except KeyError:
            owner = str(want)
        problems.append(Problem(key, f"{path} is not owned by the agent user {owner}",
                                f"run: chown {owner} {path}", warning=True))
    return problems


def _unknown(path: str, key: str, known: Mapping[str, Any]) -> Problem:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    fix = f"did you mean {close[0]!r}?" if close else f"known keys here: {', '.join(sorted(known))}"
    return Problem(path, "unknown key", fix)


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "table"}.get(type(value), type(value).__name__)


def describe() -> list[tuple[str, Any, str]]:
    """(key path, default, description) for every key: the source of docs/configuration.md."""
    rows: list[tuple[str, Any, str]] = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.metadata.get("table") or f.metadata.get("open"):
                continue
            rows.append((f"{section}.{f.name}", f.default, f.metadata["doc"]))
    for f in dataclasses.fields(SensorSettings):
        rows.append((f"telemetry.sensors.<id>.{f.name}", f.default, f.metadata["doc"]))
    return rows
