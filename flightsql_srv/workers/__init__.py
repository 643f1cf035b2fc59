"""Engine workers: DataFusion plans and runs queries in supervised child processes, never in
the process that speaks gRPC to clients.

- :mod:`~flightsql_srv.workers.protocol`: what the front and a worker say to each other.
- :mod:`~flightsql_srv.workers.worker`: the worker process (a Flight server on a Unix socket).
- :mod:`~flightsql_srv.workers.pool`: the front's side: starting, leasing, watching and
  replacing workers.

docs/architecture.md explains the design and its limits.
"""
