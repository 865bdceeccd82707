"""Installed package versions, looked up without importing the packages (cheap).

``importlib.metadata`` costs about 20 ms to import (email, zipfile, csv...), half of what a
whole read command may take (issue 7). An installed distribution's version is already in the
name of its ``NAME-VERSION.dist-info`` folder (the wheel spec fixes that name), so the common
case is one directory listing per ``sys.path`` entry; anything unusual (eggs, zipped paths,
an ambiguous listing) falls back to ``importlib.metadata``.
"""

from __future__ import annotations

import os
import re
import sys
from functools import cache


def _normalized(name: str) -> str:
    # The dist-info folder uses the name with runs of -_. as "_" (PEP 427/503), any case.
    return re.sub(r"[-_.]+", "_", name).lower()


@cache
def _dist_info_versions() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for folder in names:
            if not folder.endswith(".dist-info"):
                continue
            dist, _, version = folder[: -len(".dist-info")].partition("-")
            if version:
                found.setdefault(_normalized(dist), []).append(version)
    return found


def dist_version(name: str) -> str | None:
    """The installed version of distribution ``name`` (pip's name), or None."""
    versions = _dist_info_versions().get(_normalized(name), [])
    if len(versions) == 1:
        return versions[0]
    # Not found as a plain folder, or stale folders of several versions: ask the library,
    # which resolves sys.path order and reads METADATA as pip does.
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def version_or_missing(name: str) -> str:
    """As :func:`dist_version`, but "not installed" for a table cell."""
    return dist_version(name) or "not installed"
