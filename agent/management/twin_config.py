"""Twin desired properties as live configuration, acknowledged the IoT Plug and Play way.

Each writable property is validated, applied and acknowledged on its own: the reported property becomes
``{"value": v, "ac": 200, "av": <desired $version>, "ad": "applied"}``, or ``ac: 400`` with the reason and the
value still in force (the old one). A property is applied completely or not at all: when the sensors map
changes several sensors and one refuses, the ones already changed are put back.

Properties of other components (``"__t": "c"``, e.g. the ADU ``deviceUpdate`` component) and names claimed by
other parts of the agent are left alone; any other unknown name gets ``ac: 404``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from agent.management import validators as v
from agent.management.health import METRICS

log = logging.getLogger(__name__)

WRITABLE = ("telemetryInterval", "sensors", "logLevel", "statusLed", "healthInterval", "healthRules")


def ack(value: Any, code: int, version: Any, description: str) -> dict:
    return {"value": value, "ac": code, "av": version, "ad": description}


def _to_twin(settings: dict) -> dict:
    """Agent sensor settings -> the twin's camelCase fields."""
    back = {field: key for key, field in v.SENSOR_FIELDS.items()}
    return {back[k]: val for k, val in settings.items() if k in back}


class DesiredConfig:
    """Validates and applies desired properties; keeps what is in force for acknowledgements."""

    def __init__(self, context: Any, *, led: Any, health: Any) -> None:
        self.context = context
        self.led = led
        self.health = health
        self.claimed: set[str] = set()
        self.telemetry_interval: float | None = None
        self.log_level = getattr(getattr(context.config, "device", None), "log_level", "info")
        # Fields set per sensor from the twin, so telemetryInterval does not override an explicit interval.
        self._explicit: dict[str, set[str]] = {}
        self._handlers: dict[str, Callable[[Any], tuple[Any, str]]] = {
            "telemetryInterval": self._telemetry_interval,
            "sensors": self._sensors,
            "logLevel": self._log_level,
            "statusLed": self._status_led,
            "healthInterval": self._health_interval,
            "healthRules": self._health_rules,
        }
        self._current: dict[str, Callable[[], Any]] = {
            "telemetryInterval": lambda: self.telemetry_interval,
            "sensors": self._sensors_value,
            "logLevel": lambda: self.log_level,
            "statusLed": lambda: self.led.mode,
            "healthInterval": lambda: self.health.interval_s,
            "healthRules": lambda: self.health.rules_value(),
        }

    def process(self, desired: dict) -> dict:
        """Apply a desired patch or a whole desired document; returns the reported patch of acknowledgements."""
        version = desired.get("$version")
        reported: dict[str, Any] = {}
        # telemetryInterval first, so per-sensor intervals in the same patch win over it.
        names = sorted((k for k in desired if not k.startswith("$")), key=lambda k: k != "telemetryInterval")
        for name in names:
            value = desired[name]
            if name in self.claimed or (isinstance(value, dict) and value.get("__t") == "c"):
                continue
            handler = self._handlers.get(name)
            if handler is None:
                reported[name] = ack(value, 404, version, f"unknown property {name!r}; this device accepts "
                                                          f"{', '.join(WRITABLE)}")
                log.warning("twin: ignored unknown desired property %r", name)
                continue
            try:
                applied, description = handler(value)
            except v.BadInput as exc:
                reported[name] = ack(self._current[name](), 400, version, str(exc))
                log.warning("twin: rejected %s (version %s): %s", name, version, exc)
            except ValueError as exc:   # the sampler or the LED refused a valid-looking value
                reported[name] = ack(self._current[name](), 400, version, f"{name} not applied: {exc}")
                log.warning("twin: could not apply %s (version %s): %s", name, version, exc)
            except Exception as exc:
                reported[name] = ack(self._current[name](), 500, version, f"{name} not applied: internal error "
                                                                          f"({type(exc).__name__})")
                log.exception("twin: applying %s failed", name)
            else:
                reported[name] = ack(applied, 200, version, description)
                log.info("twin: applied %s (version %s)", name, version)
        return reported

    # -- properties -------------------------------------------------------------------------------------------
    def _telemetry_interval(self, value: Any) -> tuple[Any, str]:
        interval = v.telemetry_interval(value) if value is not None else None
        default = interval if interval is not None else float(self.context.config.telemetry.interval_s)
        self.apply_sensors({sid: {"interval_s": default} for sid in self._follows_default()})
        self.telemetry_interval = interval
        if interval is None:   # deleted from the desired twin: back to the configured interval
            return None, "reset to the configured interval"
        return interval, "applied"

    def _follows_default(self) -> list[str]:
        """Sensors without an interval of their own, neither in the twin's sensors map nor in roost.toml."""
        configured = self.context.config.telemetry.sensors
        return [sid for sid in self._sensor_ids()
                if "interval_s" not in self._explicit.get(sid, set())
                and not (sid in configured and configured[sid].interval_s > 0)]

    def _sensor_ids(self) -> list[str]:
        return list(self.context.sensors.sensor_ids())

    def _config_defaults(self, sensor_id: str) -> dict:
        import dataclasses

        config = self.context.config
        out = dataclasses.asdict(config.sensor(sensor_id))
        own = config.telemetry.sensors.get(sensor_id)
        if self.telemetry_interval is not None and not (own is not None and own.interval_s > 0):
            out["interval_s"] = self.telemetry_interval
        return out

    def _sensors(self, value: Any) -> tuple[Any, str]:
        wanted = v.sensors(value, self._sensor_ids())
        changes: dict[str, dict] = {}
        explicit = {sid: set(fields) for sid, fields in self._explicit.items()}
        for sensor_id, fields in wanted.items():
            defaults = self._config_defaults(sensor_id)
            if fields is None:
                changes[sensor_id] = {k: defaults[k] for k in v.SENSOR_FIELDS.values() if k in defaults}
                explicit.pop(sensor_id, None)
                continue
            change = {}
            for field, new in fields.items():
                if new is None:
                    if field in defaults:
                        change[field] = defaults[field]
                    explicit.get(sensor_id, set()).discard(field)
                else:
                    change[field] = new
                    explicit.setdefault(sensor_id, set()).add(field)
            changes[sensor_id] = change
        self.apply_sensors(changes)
        self._explicit = explicit
        return self._sensors_value(), "applied"

    def apply_sensors(self, changes: dict[str, dict]) -> None:
        """Apply settings to several sensors, all or none: on a refusal the earlier ones are restored."""
        control = self.context.sensors
        before = control.settings()
        done: list[str] = []
        try:
            for sensor_id, change in changes.items():
                if change:
                    control.apply(sensor_id, {**before.get(sensor_id, {}), **change})
                    done.append(sensor_id)
        except ValueError as exc:
            for sensor_id in reversed(done):
                try:
                    control.apply(sensor_id, before[sensor_id])
                except ValueError:
                    log.error("twin: could not restore the settings of sensor %s", sensor_id)
            raise ValueError(f"sensor {sensor_id}: {exc}") from None

    def _sensors_value(self) -> dict:
        return {sid: _to_twin(settings) for sid, settings in self.context.sensors.settings().items()}

    def _log_level(self, value: Any) -> tuple[Any, str]:
        level = v.log_level(value) if value is not None else self.context.config.device.log_level
        self.context.set_log_level(level)
        self.log_level = level
        return level, "applied"

    def _status_led(self, value: Any) -> tuple[Any, str]:
        mode = v.status_led(value) if value is not None else "auto"
        self.led.set_mode(mode)
        return mode, "applied"

    def _health_interval(self, value: Any) -> tuple[Any, str]:
        interval = v.health_interval(value) if value is not None else None
        self.health.set_interval(interval)
        return self.health.interval_s, "applied"

    def _health_rules(self, value: Any) -> tuple[Any, str]:
        rules = v.health_rules(value, METRICS) if value is not None else None
        self.health.update_rules(rules)
        return self.health.rules_value(), "applied"
