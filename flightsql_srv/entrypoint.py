"""The process entry point: allocator defaults first, then the command line.

Arrow's memory pool and DataFusion's global allocator are two copies of mimalloc, and each
reads its ``MIMALLOC_*`` options from the environment once, when its library loads. So the
defaults below are set here, before anything imports pyarrow or datafusion, and only where
the operator has not set the variable already.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

__all__ = ["ALLOCATOR_DEFAULTS", "apply_allocator_defaults", "main"]

#: mimalloc's default purge delay (10 ms) is pushed back by every new free, so under steady
#: load freed pages are never handed back and stay resident once the load stops, while the
#: threads that own them sit idle: ~1 GB after 30 s of bench.load. At 1 ms the server falls
#: back to 85-340 MB above its start with no measurable cost in queries/s
#: (docs/reliability.md). 0 also lowers the peak under load by ~600 MB, for ~12 % fewer
#: queries/s: a choice for memory-tight deployments, made by setting the variable.
ALLOCATOR_DEFAULTS = {"MIMALLOC_PURGE_DELAY": "1"}


def apply_allocator_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set each of :data:`ALLOCATOR_DEFAULTS` that ``environ`` does not already have."""
    for name, value in ALLOCATOR_DEFAULTS.items():
        environ.setdefault(name, value)


def main() -> None:
    """Run ``flightsql-srv``: the installed script and ``python -m flightsql_srv``."""
    apply_allocator_defaults()
    from flightsql_srv.cli import main as cli_main  # loads pyarrow: after the defaults

    cli_main()
