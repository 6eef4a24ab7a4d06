"""The IoT Plug and Play model in docs/models matches what the agent announces, accepts and reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agent.config import HubConfig
from agent.management.health import METRICS
from agent.management.twin_config import WRITABLE

MODEL = json.loads((Path(__file__).parents[3] / "docs" / "models" / "roost-device.json").read_text())
NAME = re.compile(r"^[a-zA-Z](?:[a-zA-Z0-9_]*[a-zA-Z0-9])?$")
_SEGMENT = r"[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?"
DTMI = re.compile(rf"^dtmi:{_SEGMENT}(?::{_SEGMENT})*;[1-9][0-9]{{0,8}}$")


def contents(kind):
    return {c["name"]: c for c in MODEL["contents"] if c["@type"] == kind}


def walk_names(node, path="model"):
    """Every DTDL name in the model, with where it is (names must follow DTDL's identifier rule)."""
    if isinstance(node, dict):
        if "name" in node and isinstance(node["name"], str):
            yield node["name"], path
        for key, value in node.items():
            yield from walk_names(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk_names(value, f"{path}[{i}]")


def test_model_id_is_the_one_the_agent_announces():
    assert MODEL["@context"] == "dtmi:dtdl:context;3"
    assert DTMI.match(MODEL["@id"])
    assert MODEL["@id"] == HubConfig().model_id


def test_names_are_valid_and_unique():
    for name, where in walk_names(MODEL):
        assert NAME.match(name) and len(name) <= 512, (name, where)
    names = [c["name"] for c in MODEL["contents"]]
    assert len(names) == len(set(names))


def test_writable_properties_are_the_ones_the_agent_accepts():
    props = contents("Property")
    assert {n for n, p in props.items() if p.get("writable")} == set(WRITABLE)
    assert {"deviceInfo", "health"} <= {n for n, p in props.items() if not p.get("writable")}


def test_every_method_is_a_command(make_mgmt):
    mgmt, _ = make_mgmt()
    assert set(contents("Command")) == set(mgmt.methods.table)


def test_reported_shapes_match(make_mgmt):
    mgmt, _ = make_mgmt()
    info_fields = {f["name"] for f in contents("Property")["deviceInfo"]["schema"]["fields"]}
    assert info_fields == set(mgmt.device_info())
    health_fields = {f["name"] for f in contents("Property")["health"]["schema"]["fields"]}
    assert health_fields == set(METRICS) | {"lastError"}
    sample, _ = mgmt.sample_health()
    assert set(sample) == health_fields


@pytest.mark.parametrize("kind", ["Telemetry", "Property", "Command"])
def test_descriptions_fit_dtdl_limits(kind):
    for item in contents(kind).values():
        assert len(item.get("description", "")) <= 512


def test_docs_list_every_method_and_property(make_mgmt):
    docs = (Path(__file__).parents[3] / "docs" / "management.md").read_text()
    mgmt, _ = make_mgmt()
    for name in [*mgmt.methods.table, *WRITABLE, *METRICS]:
        assert f"`{name}`" in docs, f"docs/management.md does not document {name}"


def test_command_requests_match_the_payload_fields():
    from agent.management.methods import PAYLOAD_FIELDS

    for name, command in contents("Command").items():
        fields = {f["name"] for f in command["request"]["schema"]["fields"]} if "request" in command else set()
        assert fields == set(PAYLOAD_FIELDS[name]), name
