"""The twin query subset: what it selects, and that what it does not support is refused with the reason."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.hub.service_errors import ServiceError
from emulator.hub.service_query import parse_query

TWINS = [
    {"deviceId": "a", "status": "enabled", "tags": {"site": "lab", "floor": 1},
     "properties": {"desired": {"interval": 10}, "reported": {"fw": "1.2.0"}}},
    {"deviceId": "b", "status": "disabled", "tags": {"site": "plant", "floor": 2},
     "properties": {"desired": {}, "reported": {"fw": "1.3.0"}}},
    {"deviceId": "c", "status": "enabled", "tags": {},
     "properties": {"desired": {"interval": 30}, "reported": {}}},
]


def ids(query: str) -> list[str]:
    kind, rows = parse_query(query).run(TWINS)
    assert kind == "twin"
    return [r["deviceId"] for r in rows]


@pytest.mark.parametrize("query, expected", [
    ("SELECT * FROM devices", ["a", "b", "c"]),
    ("select * from devices where tags.site = 'lab'", ["a"]),
    ("SELECT * FROM devices WHERE tags.floor >= 1 AND status = 'enabled'", ["a"]),
    ("SELECT * FROM devices WHERE tags.site = 'lab' OR properties.desired.interval > 20", ["a", "c"]),
    ("SELECT * FROM devices WHERE NOT (status = 'enabled')", ["b"]),
    ("SELECT * FROM devices WHERE tags.site IN ['lab', 'plant']", ["a", "b"]),
    ("SELECT * FROM devices WHERE tags.site NOT IN ['lab']", ["b", "c"]),
    ("SELECT * FROM devices WHERE IS_DEFINED(properties.reported.fw)", ["a", "b"]),
    ("SELECT * FROM devices WHERE STARTSWITH(properties.reported.fw, '1.3')", ["b"]),
    ("SELECT * FROM devices WHERE ENDSWITH(deviceId, 'c')", ["c"]),
    ("SELECT * FROM devices WHERE tags.missing = null", []),
    ("SELECT * FROM devices WHERE tags.floor <> 1", ["b"]),
    ("SELECT * FROM devices WHERE tags.site = \"it''s\"", []),
    ("SELECT TOP 2 * FROM devices", ["a", "b"]),
    ("SELECT * FROM devices WHERE tags.floor = '1'", []),      # a string is not the number 1
])
def test_conditions_select_the_matching_twins(query, expected):
    assert ids(query) == expected


def test_count_and_projection_rows():
    assert parse_query("SELECT COUNT() AS n FROM devices WHERE status = 'enabled'").run(TWINS) == \
        ("raw", [{"n": 2}])
    kind, rows = parse_query("SELECT deviceId, properties.reported.fw AS firmware FROM devices").run(TWINS)
    assert kind == "raw"
    assert rows == [{"deviceId": "a", "firmware": "1.2.0"}, {"deviceId": "b", "firmware": "1.3.0"},
                    {"deviceId": "c"}]


@pytest.mark.parametrize("query, fragment", [
    ("", "query"),
    ("DELETE FROM devices", "SELECT"),
    ("SELECT * FROM devices.modules", "FROM devices"),
    ("SELECT * FROM devices WHERE", "ends too early"),
    ("SELECT * FROM devices WHERE tags.x ~ 1", "cannot read"),
    ("SELECT * FROM devices GROUP BY status", "GROUP BY"),
    ("SELECT * FROM devices WHERE LOWER(deviceId) = 'a'", "not supported"),
    ("SELECT * FROM devices WHERE tags.x = 1 extra", "unexpected"),
    ("SELECT * FROM devices WHERE tags.x IN [1, ", "ends too early"),
])
def test_unsupported_or_malformed_queries_are_refused(query, fragment):
    with pytest.raises(ServiceError) as caught:
        parse_query(query)
    assert caught.value.status == 400
    assert fragment in caught.value.message


floors = st.one_of(st.integers(-5, 5), st.none())


@given(st.lists(floors, max_size=8), st.integers(-5, 5), st.sampled_from(["=", "!=", "<", ">", "<=", ">="]))
def test_numeric_comparisons_agree_with_python(values, threshold, op):
    twins = [{"deviceId": f"d{i}", "tags": {} if v is None else {"floor": v}} for i, v in enumerate(values)]
    _, rows = parse_query(f"SELECT * FROM devices WHERE tags.floor {op} {threshold}").run(twins)
    python = {"=": lambda a: a == threshold, "!=": lambda a: a != threshold, "<": lambda a: a < threshold,
              ">": lambda a: a > threshold, "<=": lambda a: a <= threshold, ">=": lambda a: a >= threshold}[op]
    expected = [f"d{i}" for i, v in enumerate(values) if v is not None and python(v)]
    assert [r["deviceId"] for r in rows] == expected
