"""``client.get_versions()``: the Python and package versions of the client, the scheduler
and every worker, and the mismatches that break a cluster (dask's ``get_versions``).

A value pickled by one process is unpickled by another: ``cloudpickle`` and ``msgpack``
must agree everywhere, Python's minor version too. The scheduler never runs client code,
so it publishes its own versions in Redis when it starts leading; workers answer
``client.run(get_versions)``.
"""

from __future__ import annotations

import importlib.metadata
import platform
import struct
import sys
from typing import Any

__all__ = ["REQUIRED", "get_versions", "mismatches"]

#: packages whose versions must match across the cluster (plus python itself)
REQUIRED = ("rdist", "cloudpickle", "msgpack", "lz4", "redis")
#: reported when installed, never required to match
OPTIONAL = ("numpy", "pandas", "dask", "psutil", "hiredis", "toolz")


def get_versions(packages: list[str] | None = None) -> dict[str, Any]:
    """This process's host and package versions (None for a package not installed)."""
    names = [*REQUIRED, *OPTIONAL, *(packages or [])]
    return {
        "host": {
            "python": ".".join(map(str, sys.version_info[:3])),
            "python-bits": struct.calcsize("P") * 8,
            "OS": platform.system(),
            "OS-release": platform.release(),
            "machine": platform.machine(),
        },
        "packages": {
            "python": ".".join(map(str, sys.version_info[:3])),
            **{name: _version(name) for name in dict.fromkeys(names)},
        },
    }


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def mismatches(
    versions: dict[str, Any], packages: list[str] | None = None
) -> dict[str, dict[str, str | None]]:
    """Required packages (python by minor version) whose versions differ between the
    ``client``, the ``scheduler`` and the ``workers`` of a ``get_versions`` answer:
    ``{package: {process: version}}``."""
    seen: dict[str, dict[str, Any]] = {"client": versions["client"]}
    if versions.get("scheduler") is not None:
        seen["scheduler"] = versions["scheduler"]
    for address, answer in (versions.get("workers") or {}).items():
        seen[address] = answer
    out: dict[str, dict[str, str | None]] = {}
    for package in ("python", *REQUIRED, *(packages or [])):
        found = {who: _comparable(package, v["packages"].get(package)) for who, v in seen.items()}
        if len(set(found.values())) > 1:
            out[package] = {who: v["packages"].get(package) for who, v in seen.items()}
    return out


def _comparable(package: str, version: str | None) -> str | None:
    if package == "python" and version is not None:
        return ".".join(version.split(".")[:2])  # 3.11.4 and 3.11.7 unpickle each other's
    return version


def mismatch_message(found: dict[str, dict[str, str | None]]) -> str:
    lines = ["Mismatched versions found (values pickled in one process are read in another):"]
    for package, by_process in found.items():
        where = ", ".join(f"{who}: {version}" for who, version in by_process.items())
        lines.append(f"  {package}: {where}")
    return "\n".join(lines)
