"""Installed package versions, looked up without importing the packages (cheap)."""

from __future__ import annotations

from importlib import metadata


def dist_version(name: str) -> str | None:
    """The installed version of distribution ``name`` (pip's name), or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def version_or_missing(name: str) -> str:
    """As :func:`dist_version`, but "not installed" for a table cell."""
    return dist_version(name) or "not installed"
