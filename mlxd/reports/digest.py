"""The nightly digest: the report of the last 24 hours, written to ``MLXD_HOME/reports/``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mlxd.config import Paths

_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class DigestError(ValueError):
    pass


def parse_hhmm(text: str) -> tuple[int, int]:
    """``07:30`` -> (7, 30); a one-line error otherwise."""
    m = _HHMM.match(text.strip())
    if not m:
        raise DigestError(f"--digest takes a time of day as HH:MM (e.g. 07:30), not '{text}'")
    return int(m.group(1)), int(m.group(2))


def write_digest(paths: Paths, now: datetime | None = None) -> list[Path]:
    """Write the last 24 hours as Markdown and HTML; returns the two files."""
    from mlxd.catalog.read import Reader
    from mlxd.reports.html import render_html
    from mlxd.reports.markdown import render_markdown
    from mlxd.reports.report import make_report

    now = now or datetime.now(UTC)
    reader = Reader(paths)
    try:
        rep = make_report(
            reader,
            since=now - timedelta(hours=24),
            now=now,
            title="mlxd nightly digest: the last 24 hours",
        )
    finally:
        reader.close()
    out = paths.home / "reports"
    out.mkdir(parents=True, exist_ok=True)
    stamp = now.astimezone().strftime("%Y-%m-%d-%H%M")
    written = []
    for suffix, text in (("md", render_markdown(rep)), ("html", render_html(rep))):
        path = out / f"digest-{stamp}.{suffix}"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
