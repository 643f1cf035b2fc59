"""Scenario runners for single-client latency: the agreement check, ``SELECT 1`` (a) and the
Grafana panel (b), each over all contenders, interleaved."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from typing import Any

import pyarrow.flight as flight

from bench import checks, queries, scenarios
from bench.common import Sessions, query_call, row
from bench.contenders import OURS, Contender
from bench.params import Params

__all__ = ["run_checks", "run_select1", "run_panel"]


# --- correctness ------------------------------------------------------------------------------


def run_checks(contenders: list[Contender], sessions: Sessions) -> dict[str, Any]:
    """Fingerprint every checked query on every contender; all must agree with ours."""
    layouts = (("file", "{points}"), ("day directory", "{days}"))
    # (name, SQL, the Grafana-macro form our server must also agree on, if any)
    cases: list[tuple[str, str, str | None]] = [
        *((f"whole table, {lay}", queries.CHECK.replace("{table}", t), None) for lay, t in layouts),
        *(
            (
                f"panel, {lay}",
                queries.PANEL.replace("{table}", t),
                queries.PANEL_GRAFANA.replace("{table}", t),
            )
            for lay, t in layouts
        ),
        *((f"dashboard: {name}", sql, None) for name, sql in queries.DASHBOARD),
    ]
    ours = contenders[0]
    results = []
    for name, template, grafana in cases:
        prints = {
            c.name: checks.fingerprint(sessions.get(c).query(c.sql(template))) for c in contenders
        }
        if grafana is not None:
            prints[f"{OURS} (Grafana macros)"] = checks.fingerprint(
                sessions.get(ours, queries.grafana_headers()).query(ours.sql(grafana))
            )
        reference = prints[OURS]
        agree = all(checks.same(reference, fp) for fp in prints.values())
        results.append({"query": name, "agree": agree, "fingerprints": prints})
    return {"agree": all(r["agree"] for r in results), "queries": results}


# --- a. SELECT 1 ------------------------------------------------------------------------------


def run_select1(contenders: list[Contender], sessions: Sessions, p: Params) -> dict[str, Any]:
    calls: dict[tuple[str, str], Callable[[], object]] = {}
    clients: list[flight.FlightClient] = []
    for c in contenders:
        variant = "ADBC" if c.uri else "SessionContext.sql"
        calls[(c.name, variant)] = query_call(sessions.get(c), queries.SELECT1)
        if c.uri:
            client = flight.connect(c.uri)
            clients.append(client)
            calls[(c.name, "pyarrow GetFlightInfo+DoGet")] = lambda client=client: (
                scenarios.flight_query(client, queries.SELECT1)
            )
    try:
        stats = scenarios.interleaved_latency(
            {f"{k[0]}|{k[1]}": v for k, v in calls.items()},
            p.select1_n,
            budget_s=p.latency_budget_s,
        )
    finally:
        for client in clients:
            client.close()
    rows = [row(*key.split("|"), **asdict(s)) for key, s in stats.items()]
    return {"n": p.select1_n, "rows": rows}


# --- b. panel query ---------------------------------------------------------------------------


def run_panel(contenders: list[Contender], sessions: Sessions, p: Params) -> dict[str, Any]:
    """The panel on both layouts, as plain SQL everywhere and with macros on our server (whose
    rows are compared with the other contenders' plain SQL on the same layout)."""
    calls: dict[str, Callable[[], object]] = {}
    for layout, table in (("file", "{points}"), ("day directory", "{days}")):
        plain = queries.PANEL.replace("{table}", table)
        grafana = queries.PANEL_GRAFANA.replace("{table}", table)
        for c in contenders:
            calls[f"{c.name}|{layout}, SQL"] = query_call(sessions.get(c), c.sql(plain))
            if c.name == OURS:
                session = sessions.get(c, queries.grafana_headers())
                calls[f"{c.name}|{layout}, Grafana macros"] = query_call(session, c.sql(grafana))
    stats = scenarios.interleaved_latency(calls, p.panel_n, p.warmup, p.latency_budget_s)
    rows = [row(*key.split("|"), **asdict(s)) for key, s in stats.items()]
    for r in rows:
        r["ref_variant"] = r["variant"].replace("Grafana macros", "SQL")
    return {
        "n": p.panel_n,
        "sql": queries.PANEL,
        "grafana_sql": queries.PANEL_GRAFANA,
        "rows": rows,
        "split": _panel_split([c for c in contenders if c.uri], p),
    }


def _panel_split(servers: list[Contender], p: Params) -> list[dict[str, Any]]:
    """The file panel through raw pyarrow.flight: GetFlightInfo alone (planning, and for a
    server that executes early, execution) against GetFlightInfo + DoGet, per server."""
    calls: dict[str, Callable[[], object]] = {}
    with ExitStack() as stack:
        for c in servers:
            assert c.uri is not None
            client = stack.enter_context(flight.connect(c.uri))
            sql = c.sql(queries.PANEL.replace("{table}", "{points}"))
            calls[f"{c.name}|GetFlightInfo"] = lambda cl=client, q=sql: scenarios.flight_info(cl, q)
            calls[f"{c.name}|GetFlightInfo + DoGet"] = lambda cl=client, q=sql: (
                scenarios.flight_query(cl, q)
            )
        stats = scenarios.interleaved_latency(calls, p.panel_n, p.warmup, p.latency_budget_s)
    return [row(*key.split("|"), **asdict(s)) for key, s in stats.items()]
