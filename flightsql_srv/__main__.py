"""Allow ``python -m flightsql_srv``."""

from flightsql_srv.entrypoint import main

main()
