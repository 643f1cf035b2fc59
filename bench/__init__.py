"""The benchmark suite of flightsql-srv: our server against in-process DataFusion and roapi.

Run ``python -m bench`` (``--help`` for options; ``--quick`` for a CI-sized smoke run). It
generates a cached 30-day Parquet time series (one file and a day-partitioned directory),
starts our server and roapi (when installed) as subprocesses on loopback, runs every scenario
against all three contenders, checks that they return the same answers, and writes
``bench/results/latest.json``, ``latest.md`` and PNG plots. Modules, one job each:
``data`` (the files), ``queries`` (the SQL), ``contenders`` (sessions on each engine),
``server`` / ``roapi`` (the subprocesses), ``scenarios`` (latency, scans), ``concurrency``
(dashboards, scaling), ``checks`` (do the answers agree), ``suite`` (one run), ``report`` and
``plots`` (the outputs).
"""

from __future__ import annotations
