"""Facts about the MLX installation and the device it runs on."""

from __future__ import annotations

from typing import Any

from mlxd.system.versions import dist_version

# Keys mx.device_info() may report, normalised to names with units. Metal reports
# memory_size, some other backends total_memory; the CPU backend reports neither.
_MEMORY_KEYS = {
    "memory_size": "memory_bytes",
    "total_memory": "memory_bytes",
    "max_recommended_working_set_size": "max_recommended_working_set_bytes",
    "max_buffer_length": "max_buffer_bytes",
}


def backend_facts() -> dict[str, Any]:
    """Versions, backend ("metal" | "cuda" | "cpu") and what mx.device_info() tells.

    Always present: mlx_version, mlx_lm_version, backend, device_name, architecture,
    memory_bytes (None when unknown), device_info (the raw dict, {} if unavailable).
    """
    import mlx.core as mx

    backend = _backend(mx)
    info: dict[str, Any] = {}
    # mx.device_info() is mlx >= 0.30.4; mx.metal.device_info() is the older, Metal-only form.
    for get in (getattr(mx, "device_info", None), getattr(mx.metal, "device_info", None)):
        if get is None:
            continue
        try:
            info = dict(get())
            break
        except Exception:  # an unsupported device must not break a report
            continue

    facts: dict[str, Any] = {
        "mlx_version": getattr(mx, "__version__", None) or dist_version("mlx"),
        "mlx_lm_version": dist_version("mlx-lm") or dist_version("mlx_lm"),
        "backend": backend,
        "default_device": str(mx.default_device()),
        "device_name": info.get("device_name"),
        "architecture": info.get("architecture"),
        "memory_bytes": None,
        "max_recommended_working_set_bytes": None,
        "max_buffer_bytes": None,
        "device_info": {k: v for k, v in info.items() if isinstance(v, str | int | float)},
    }
    for key, name in _MEMORY_KEYS.items():
        if facts[name] is None and isinstance(info.get(key), int):
            facts[name] = info[key]
    return facts


def system_facts() -> dict[str, Any]:
    """machine_facts() plus what the MLX backend says (call only where mlx may be imported)."""
    from mlxd.system.sysinfo import machine_facts

    facts = machine_facts()
    backend = backend_facts()
    facts["backend"] = backend.get("backend", facts["backend"])
    facts["mlx_version"] = backend.get("mlx_version", facts["mlx_version"])
    facts["mlx_lm_version"] = backend.get("mlx_lm_version", facts["mlx_lm_version"])
    if backend.get("device_name") and facts["backend"] != "cpu":
        facts["chip"] = facts.get("chip") or backend["device_name"]
    return facts


def _backend(mx: Any) -> str:
    if mx.metal.is_available():
        return "metal"
    cuda = getattr(mx, "cuda", None)
    if cuda is not None and cuda.is_available():
        return "cuda"
    return "cpu"
