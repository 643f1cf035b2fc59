"""Allow ``python -m flightsql_srv``."""

from flightsql_srv.entrypoint import main

# Guarded: engine worker processes import the main module again (multiprocessing).
if __name__ == "__main__":
    main()
