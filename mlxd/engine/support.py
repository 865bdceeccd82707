"""Whether the installed mlx-lm can load a model, judged from its config.json alone."""

from __future__ import annotations

import importlib.util
from typing import Any


def unsupported_reason(config: dict[str, Any]) -> str | None:
    """None if mlx-lm has an implementation for this config's model_type, else why not."""
    import mlx_lm
    from mlx_lm.utils import MODEL_REMAPPING

    # mlx_lm.utils._get_classes: architecture-specific remaps first, then by model_type.
    arch_remap = getattr(
        importlib.import_module("mlx_lm.utils"), "MODEL_ARCHITECTURE_REMAPPING", {}
    )
    model_type = config.get("model_type")
    if not model_type:
        return "its config.json has no model_type"
    architectures = config.get("architectures") or ()
    if isinstance(architectures, str):
        architectures = (architectures,)
    target = next(
        (arch_remap[(model_type, a)] for a in architectures if (model_type, a) in arch_remap),
        MODEL_REMAPPING.get(model_type, model_type),
    )
    try:
        found = importlib.util.find_spec(f"mlx_lm.models.{target}") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return f"model_type '{model_type}' is not supported by the installed mlx-lm {mlx_lm.__version__}"
    return None
