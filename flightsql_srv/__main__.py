"""Allow ``python -m flightsql_srv``."""

from flightsql_srv.cli import main

main()
