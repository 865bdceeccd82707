"""Seam 3: what a job stores and what a reader reads are one typed definition.

The report's fine-tuning rows once read ``final_train_loss``/``train_losses`` from the job's
result, where jobs store a summary (``train_loss``/``val_loss``): the section was always
empty. Now the report reads the Adapter row the job writes, by its own column names."""

from __future__ import annotations

from dataclasses import fields


def test_the_reports_finetune_figures_are_adapter_columns():
    from mlxd.catalog.models import Adapter
    from mlxd.reports.data import FINETUNE_RUN_DERIVED, FinetuneRun

    own = [f.name for f in fields(FinetuneRun) if f.name not in FINETUNE_RUN_DERIVED]
    assert own and set(own) <= set(Adapter.model_fields), set(own) - set(Adapter.model_fields)
    assert {"final_train_loss", "final_val_loss"} <= set(own)


def test_the_finetune_job_writes_the_columns_the_report_reads():
    """jobs/finetune.py's finish sets the Adapter columns by keyword: each figure the report
    shows is among them (a renamed column fails here, not in an empty report)."""
    import ast
    import inspect

    from mlxd.jobs import finetune
    from mlxd.reports.data import FINETUNE_RUN_DERIVED, FinetuneRun

    tree = ast.parse(inspect.getsource(finetune.finish))
    written = {
        kw.arg
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "update_adapter"
        for kw in node.keywords
    }
    read = {f.name for f in fields(FinetuneRun)} - set(FINETUNE_RUN_DERIVED) - {"status"}
    assert read <= written, read - written
