"""A report as Markdown: something to paste into a pull request or read in a terminal."""

from __future__ import annotations

from mlxd.reports.report import Report, Table


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_md(table: Table) -> str:
    lines = [
        "| " + " | ".join(table.headers) + " |",
        "|" + "|".join("---" for _ in table.headers) + "|",
    ]
    lines += ["| " + " | ".join(_escape(cell.text) for cell in row) + " |" for row in table.rows]
    return "\n".join(lines)


def render_markdown(report: Report) -> str:
    out = [f"# {report.title}", ""]
    for section in report.sections:
        out += ["#" * section.level + " " + section.title, ""]
        for block in section.blocks:
            out += [block if isinstance(block, str) else table_md(block), ""]
    return "\n".join(out).rstrip() + "\n"
