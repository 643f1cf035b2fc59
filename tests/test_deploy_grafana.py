"""deploy/grafana and docs/grafana.md stay true: the provisioning files say what the docs say,
and every SQL of the demo dashboard runs against the real server the way Grafana sends it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightsql_srv.macros import BUILTIN_NAMES
from flightsql_srv.protocol import pack, sql_pb2
from tests.conftest import ROOT

GRAFANA = ROOT / "deploy" / "grafana"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "flightsql.yaml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "flightsql.yaml"
DASHBOARD = GRAFANA / "dashboards" / "flightsql-demo.json"
DOCS = ROOT / "docs" / "grafana.md"

DATASOURCE_UID = "flightsql-srv"
DATASOURCE_TYPE = "influxdata-flightsql-datasource"

#: What the datasource sends with each query in a dashboard over "now-6h .. now".
GRAFANA_HEADERS = [
    (b"query_range_begin", b"now-6h"),
    (b"query_range_end", b"now"),
    (b"interval_ms", b"60000"),
    (b"x-client-type", b"grafana"),
]
#: ``${host:sqlstring}`` with two hosts selected, as Grafana's frontend interpolates it.
HOST_SELECTION = "'host-01','host-02'"
_HOST_VARIABLE = re.compile(r"\$\{host(?::[A-Za-z]+)?\}|\$host\b|\[\[host\]\]")
#: A Grafana template variable left over after substitution (macros start with ``$__``).
_LEFTOVER_VARIABLE = re.compile(r"\$\{|\$(?!__)[A-Za-z]|\[\[")


# -- provisioning files (PyYAML is not a dependency: line-based checks) -----------------------


def _active_lines(path: Any) -> list[str]:
    """The YAML lines that are not comments or blank, trailing comments kept."""
    text = path.read_text()
    assert "\t" not in text, f"{path.name}: YAML must be indented with spaces"
    return [line.rstrip() for line in text.splitlines() if line.strip() and line.lstrip()[0] != "#"]


def test_datasource_provisioning() -> None:
    lines = _active_lines(DATASOURCES)
    assert lines[0] == "apiVersion: 1"
    assert "datasources:" in lines
    stripped = [line.strip() for line in lines]
    for expected in (
        f"type: {DATASOURCE_TYPE}",
        f"uid: {DATASOURCE_UID}",
        "host: flightsql-srv:50051",
        "secure: false",
        "metadata:",
        "- x-client-type: grafana",
    ):
        assert expected in stripped, f"{DATASOURCES.name} lacks {expected!r}"
    assert stripped.index("metadata:") + 1 == stripped.index("- x-client-type: grafana")
    # one active datasource; the micromegas one and the token are there, commented out
    assert sum(line.startswith("- name:") for line in stripped) == 1
    text = DATASOURCES.read_text()
    assert re.search(r"^\s*#\s*type: micromegas-micromegas-datasource$", text, re.M)
    assert re.search(r"^\s*#\s*token: \$FLIGHTSQL_TOKEN$", text, re.M)


def test_dashboard_provider() -> None:
    stripped = [line.strip() for line in _active_lines(PROVIDERS)]
    assert stripped[0] == "apiVersion: 1"
    for expected in ("providers:", "type: file", "path: /var/lib/grafana/dashboards"):
        assert expected in stripped, f"{PROVIDERS.name} lacks {expected!r}"


# -- dashboard structure ----------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _queries() -> list[tuple[str, str, str]]:
    """(where, format, SQL) for every panel target and query variable of the dashboard."""
    dashboard = _dashboard()
    found = []
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r}", target["format"], target["queryText"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"variable {variable['name']}", "table", variable["query"]["queryText"]))
    return found


def test_dashboard_structure() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] == "flightsql-srv demo"
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["time"] == {"from": "now-6h", "to": "now"}

    (host,) = [v for v in dashboard["templating"]["list"] if v["name"] == "host"]
    assert host["type"] == "query" and host["multi"] and host["includeAll"]
    assert host["datasource"] == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
    assert host["query"]["queryText"] == "select distinct host from demo.metrics order by host"

    panels = list(_panels(dashboard["panels"]))
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    types = {p["type"] for p in panels}
    assert {"timeseries", "logs", "table"} <= types and types & {"stat", "barchart"}
    for panel in panels:
        assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
            assert target["rawQuery"] is True and target["queryText"].strip(), panel["title"]
            assert target["format"] in ("table", "time_series", "logs"), panel["title"]
            assert "${host:sqlstring}" in target["queryText"], panel["title"]
            assert "$__timeFilter(time)" in target["queryText"], panel["title"]

    (cpu,) = [p for p in panels if p["title"] == "CPU by host"]
    assert cpu["type"] == "timeseries" and cpu["targets"][0]["format"] == "time_series"
    all_sql = " ".join(sql for _, _, sql in _queries())
    assert "$__errorRatio(" in all_sql or "$__timeGroupAlias(" in all_sql


# -- every dashboard query, through the real server ---------------------------------------------


def _grafana_sql(sql: str) -> str:
    """The SQL as the datasource's frontend hands it on: template variables replaced."""
    sql = _HOST_VARIABLE.sub(HOST_SELECTION, sql)
    assert not _LEFTOVER_VARIABLE.search(sql), f"unreplaced template variable in: {sql}"
    return sql


def _run(client: flight.FlightClient, sql: str) -> pa.Table:
    options = flight.FlightCallOptions(headers=GRAFANA_HEADERS)
    command = pack(sql_pb2.CommandStatementQuery(query=sql))
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command), options)
    assert len(info.endpoints) == 1
    return client.do_get(info.endpoints[0].ticket, options).read_all()


@pytest.mark.parametrize(
    ("where", "fmt", "sql"), [pytest.param(*query, id=query[0]) for query in _queries()]
)
def test_dashboard_query_runs(client: flight.FlightClient, where: str, fmt: str, sql: str) -> None:
    table = _run(client, _grafana_sql(sql))
    assert table.num_rows > 0, f"{where} returned no rows"
    for field in table.schema:
        t = field.type
        assert not (pa.types.is_large_string(t) or pa.types.is_string_view(t)), field
        assert not (pa.types.is_dictionary(t) or pa.types.is_decimal(t)), field
        if pa.types.is_timestamp(t):
            assert t.unit == "ns", field
    if "host in (" in sql and "host" in table.column_names:
        assert set(table.column("host").to_pylist()) <= {"host-01", "host-02"}, where
    if fmt == "time_series":
        # the plugin needs a field named exactly "time", ascending and non-null (long to wide)
        times = table.column("time")
        assert pa.types.is_timestamp(times.type) and times.null_count == 0
        values = times.to_pylist()
        assert values == sorted(values), f"{where}: time is not ascending"
    if fmt == "logs":
        # Grafana's logs panel takes the first time field as the timestamp, the first string
        # field as the body and "level" as the severity
        assert pa.types.is_timestamp(table.schema.field(0).type)
        strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
        assert strings[0] == "message" and "level" in strings


def test_variable_lists_every_host(client: flight.FlightClient) -> None:
    (host,) = _dashboard()["templating"]["list"]
    hosts = _run(client, host["query"]["queryText"]).column(0).to_pylist()
    assert hosts == [f"host-{i:02d}" for i in range(20)]


# -- docs -----------------------------------------------------------------------------------------


def test_docs_cover_macros_and_dashboard() -> None:
    docs = DOCS.read_text()
    missing = [name for name in sorted(BUILTIN_NAMES) if f"$__{name}" not in docs]
    assert not missing, f"docs/grafana.md does not mention: {missing}"
    for where, _, sql in _queries():
        assert sql in docs, f"docs/grafana.md does not show the query of {where} verbatim"
    for needle in (
        "influxdata-flightsql-datasource",
        "micromegas-micromegas-datasource",
        "x-client-type: grafana",
        "query_range_begin",
        "bound_scans: false",
        "--macros",
        "deploy/grafana/provisioning",
    ):
        assert needle in docs, f"docs/grafana.md lacks {needle!r}"
