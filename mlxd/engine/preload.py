"""Importing what a job child needs before its job arrives (a spare child)."""

from __future__ import annotations

# A job's child imports these before its request arrives: mlx_lm alone is ~1 s here, and a
# spare child that has paid it already lets the next job start at once (DESIGN.md,
# "Performance notes"). Every child imports the same set, spare or not, so a job's memory
# figures do not depend on which kind of child ran it.
WARM_MODULES = (
    "mlx.core",
    "mlx.nn",
    "mlx.utils",
    "mlx_lm",
    "mlx_lm.generate",
    "mlx_lm.utils",
    "mlx_lm.models.cache",
    "mlx_lm.models.llama",
    "mlx_lm.models.qwen2",
)


def warm_imports() -> dict[str, str]:
    """Import mlx, mlx_lm and every ``mlxd.engine`` module; returns {module: error} failures.

    A module that fails here is only reported: the job that needs it fails on its own.
    """
    import importlib
    import pkgutil

    import mlxd.engine

    names = list(WARM_MODULES)
    names += [f"mlxd.engine.{m.name}" for m in pkgutil.iter_modules(mlxd.engine.__path__)]
    failed = {}
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001  e.g. a half-written module: report, go on
            failed[name] = f"{type(e).__name__}: {e}"
    return failed
