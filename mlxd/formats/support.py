"""Whether the installed mlx-lm can load a model, judged from its config.json alone.

Pure Python: mlx-lm's package folder is found without importing it (importing mlx_lm imports
mlx, ~1 s), and its model-type remapping tables are read from ``mlx_lm/utils.py`` as Python
literals, the way ``mlx_lm.utils._get_classes`` uses them.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path
from typing import Any

from mlxd.system.versions import dist_version


@cache
def _mlx_lm_tables() -> tuple[Path | None, dict[str, str], dict[tuple[str, str], str]]:
    spec = importlib.util.find_spec("mlx_lm")  # finds the folder; runs nothing
    if spec is None or not spec.submodule_search_locations:
        return None, {}, {}
    root = Path(next(iter(spec.submodule_search_locations)))
    remap: dict[str, str] = {}
    arch_remap: dict[tuple[str, str], str] = {}
    try:
        tree = ast.parse((root / "utils.py").read_text())
    except (OSError, SyntaxError):
        return root, remap, arch_remap
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            name = getattr(node.targets[0], "id", None)
            if name in ("MODEL_REMAPPING", "MODEL_ARCHITECTURE_REMAPPING"):
                try:
                    value = ast.literal_eval(node.value)
                except ValueError:
                    continue
                (remap if name == "MODEL_REMAPPING" else arch_remap).update(value)
    return root, remap, arch_remap


def unsupported_reason(config: dict[str, Any]) -> str | None:
    """None if the installed mlx-lm has an implementation for this config, else why not."""
    model_type = config.get("model_type")
    if not model_type or not isinstance(model_type, str):
        return "its config.json has no model_type"
    root, remap, arch_remap = _mlx_lm_tables()
    if root is None:
        return "mlx-lm is not installed"
    architectures = config.get("architectures") or ()
    if isinstance(architectures, str):
        architectures = (architectures,)
    target = next(
        (arch_remap[(model_type, a)] for a in architectures if (model_type, a) in arch_remap),
        remap.get(model_type, model_type),
    )
    if not (root / "models" / f"{target}.py").is_file():
        version = dist_version("mlx-lm") or "?"
        return f"model_type '{model_type}' is not supported by the installed mlx-lm {version}"
    return None
