"""The machine a run happened on: CPU, cores, memory, OS and the versions on the measured path."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

import psutil

__all__ = ["machine_info"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, OS and the versions of everything on the measured path."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "pyarrow": _version("pyarrow"),
        "datafusion": _version("datafusion"),
        "adbc_driver_flightsql": _version("adbc-driver-flightsql"),
        "adbc_driver_manager": _version("adbc-driver-manager"),
        "numpy": _version("numpy"),
        "flightsql_srv": _version("flightsql-srv"),
        "roapi": _version("roapi"),
        "matplotlib": _version("matplotlib"),
    }
