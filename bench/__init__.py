"""End-to-end benchmark of flightsql-srv against in-process DataFusion.

Run ``python -m bench`` (``--help`` for options). It generates a cached Parquet time series,
starts the server as a subprocess on loopback, measures ``SELECT 1`` latency, full-scan
throughput (ADBC and raw pyarrow.flight) and server RSS, then writes
``bench/results/latest.json`` and ``latest.md``.
"""

from __future__ import annotations
