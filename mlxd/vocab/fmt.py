"""Number formats shared by the Markdown and HTML reports."""

from __future__ import annotations

import math
from datetime import datetime

from mlxd.vocab.choices import DEFAULT_PREFILL_STEP_SIZE


def size(n: float | None) -> str:
    """Bytes in a unit that suits the value (per value, not per column)."""
    if n is None:
        return ""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def num(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    return f"{x:,.{digits}f}"


def pm(mean: float | None, half: float | None, digits: int = 1) -> str:
    """``123.4 ± 2.1``; the mean alone when there is no interval."""
    if mean is None:
        return ""
    if half is None or not math.isfinite(half):
        return num(mean, digits)
    return f"{num(mean, digits)} ± {num(half, digits)}"


def sig(x: float | None, digits: int = 4) -> str:
    """``digits`` significant digits, never in exponent form (a person reads '1050', not
    '1.05e+03'; '0.000123', not '1.23e-04'); a whole number keeps all its digits."""
    if x is None or not math.isfinite(x):
        return ""
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    text = f"{x:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def pct(x: float | None) -> str:
    return "" if x is None else f"{x * 100:.1f}%"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def stamp(dt: datetime | None) -> str:
    return "" if dt is None else dt.astimezone().strftime("%Y-%m-%d %H:%M")


def point_label(point: dict | None) -> str:
    """A benchmark point in llama-bench's words: ``pp512 tg128``, plus what is not default."""
    if not point:
        return ""
    out = [f"pp{point['prompt_tokens']}", f"tg{point['gen_tokens']}"]
    if point.get("batch_size", 1) != 1:
        out.append(f"b{point['batch_size']}")
    if point.get("depth"):
        out.append(f"d{point['depth']}")
    if point.get("kv_bits"):
        out.append(f"kv{point['kv_bits']}bit")
    if point.get("max_kv_size"):
        out.append(f"maxkv{point['max_kv_size']}")
    if point.get("prefill_step_size") not in (None, DEFAULT_PREFILL_STEP_SIZE):
        out.append(f"prefill {point['prefill_step_size']}")
    return " ".join(out)
