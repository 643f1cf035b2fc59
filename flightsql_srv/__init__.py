"""flightsql-srv: an Arrow Flight SQL query service answered by Apache DataFusion."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flightsql-srv")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
