"""Checks for everything the cloud sends: twin desired values and method payloads.

Each validator returns the value in the agent's own form or raises BadInput with a sentence that says what
was wrong and what is accepted; callers turn that into ``ac: 400`` or a 400 method status. Validators never
change anything, so a rejected input cannot leave half an update behind.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

LOG_LEVELS = ("debug", "info", "warning", "error")
LED_MODES = ("auto", "on", "off")
RULE_OPS = (">", ">=", "<", "<=")
SEVERITIES = ("warning", "critical")
MAX_RULES = 32
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")

# Twin (camelCase, like every IoT Plug and Play property) -> agent.config.SensorSettings field.
SENSOR_FIELDS = {"enabled": "enabled", "interval": "interval_s", "deadband": "deadband",
                 "rateLimit": "rate_limit_s", "window": "window_s"}


class BadInput(ValueError):
    """Input from the cloud that cannot be used; the message is returned to the caller as is."""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


def number(value: Any, what: str, lo: float, hi: float) -> float:
    """A finite JSON number within [lo, hi] (booleans are not numbers here, whatever Python thinks)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInput(f"{what} must be a number, not {_kind(value)}")
    if not math.isfinite(value):
        raise BadInput(f"{what} must be a finite number")
    if not lo <= value <= hi:
        raise BadInput(f"{what} must be between {lo:g} and {hi:g}, not {value:g}")
    return float(value)


def choice(value: Any, what: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        shown = repr(value) if isinstance(value, str) else _kind(value)
        raise BadInput(f"{what} must be one of {', '.join(choices)}, not {shown}")
    return value


def boolean(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise BadInput(f"{what} must be true or false, not {_kind(value)}")
    return value


def obj(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise BadInput(f"{what} must be a JSON object, not {_kind(value)}")
    return value


def only_keys(value: Mapping, what: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    extra = sorted(k for k in value if k not in allowed)
    if extra:
        raise BadInput(f"{what} has unknown field(s) {', '.join(extra)}; allowed: {', '.join(allowed)}")


# -- twin desired properties ---------------------------------------------------------------------------------
def telemetry_interval(value: Any) -> float:
    return number(value, "telemetryInterval (seconds)", 0.1, 86400)


def log_level(value: Any) -> str:
    return choice(value, "logLevel", LOG_LEVELS)


def status_led(value: Any) -> str:
    return choice(value, "statusLed", LED_MODES)


def health_interval(value: Any) -> float:
    return number(value, "healthInterval (seconds)", 10, 86400)


def sensor_fields(value: Any, sensor_id: str) -> dict[str, Any]:
    """One sensor's desired settings: camelCase fields, each optional; null means 'back to the config value'."""
    what = f"sensors.{sensor_id}"
    obj(value, what)
    only_keys(value, what, SENSOR_FIELDS)
    out: dict[str, Any] = {}
    for key, raw in value.items():
        field = SENSOR_FIELDS[key]
        if raw is None:
            out[field] = None
        elif key == "enabled":
            out[field] = boolean(raw, f"{what}.enabled")
        elif key == "interval":
            out[field] = number(raw, f"{what}.interval (seconds)", 0.1, 86400)
        elif key == "deadband":
            out[field] = number(raw, f"{what}.deadband", 0, 1e9)
        else:
            out[field] = number(raw, f"{what}.{key} (seconds)", 0, 86400)
    return out


def sensors(value: Any, known: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    """The ``sensors`` map: sensor id -> settings (or null to return that sensor to its configured settings)."""
    obj(value, "sensors")
    known = sorted(known)
    out: dict[str, dict[str, Any] | None] = {}
    for sensor_id, settings in value.items():
        if sensor_id not in known:
            raise BadInput(f"sensors: this device has no sensor {sensor_id!r}; it has {', '.join(known) or 'none'}")
        out[sensor_id] = None if settings is None else sensor_fields(settings, sensor_id)
    return out


def health_rule(value: Any, name: str, metrics: Iterable[str]) -> dict[str, Any]:
    what = f"healthRules.{name}"
    obj(value, what)
    only_keys(value, what, ("metric", "op", "threshold", "severity"))
    for required in ("metric", "op", "threshold"):
        if required not in value:
            raise BadInput(f"{what} needs '{required}'")
    return {
        "metric": choice(value["metric"], f"{what}.metric", sorted(metrics)),
        "op": choice(value["op"], f"{what}.op", RULE_OPS),
        "threshold": number(value["threshold"], f"{what}.threshold", -1e12, 1e12),
        "severity": choice(value.get("severity", "warning"), f"{what}.severity", SEVERITIES),
    }


def health_rules(value: Any, metrics: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    obj(value, "healthRules")
    if len(value) > MAX_RULES:
        raise BadInput(f"healthRules has {len(value)} rules; at most {MAX_RULES} are allowed")
    metrics = tuple(metrics)
    out: dict[str, dict[str, Any] | None] = {}
    for name, rule in value.items():
        if not _NAME.match(name):
            raise BadInput(f"healthRules: rule name {name!r} must start with a letter and use only letters, "
                           "digits and _ (at most 64)")
        out[name] = None if rule is None else health_rule(rule, name, metrics)
    return out


# -- method payloads -----------------------------------------------------------------------------------------
def payload_object(payload: Any, method: str, allowed: Iterable[str]) -> dict:
    """A method payload that must be an object (null and absent mean {}) with only ``allowed`` fields."""
    if payload is None or payload == "":
        return {}
    obj(payload, f"{method} payload")
    only_keys(payload, f"{method} payload", allowed)
    return payload


def timezone_name(value: Any, available: Iterable[str]) -> str:
    if not isinstance(value, str) or not value:
        raise BadInput(f"timeZone must be an IANA time zone name such as 'Europe/Berlin', not {_kind(value)}")
    if value not in set(available):
        raise BadInput(f"timeZone {value!r} is not a known IANA time zone (e.g. 'Europe/Berlin', 'UTC')")
    return value
