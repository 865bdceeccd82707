"""Turning catalog rows into what a person reads: results tables, comparisons, sweep tables,
and reports (Markdown, self-contained HTML with charts, SQL).

For reports, ``data`` reads what a report needs from the catalog (stdlib sqlite3, aggregated
in SQL so a catalog of 100,000 runs stays quick); ``recommend`` and ``regressions`` decide from
it; ``markdown``, ``html`` and ``charts`` render it; ``export`` writes SQL. Only ``charts``
imports matplotlib, and only when an HTML report is drawn.
"""
