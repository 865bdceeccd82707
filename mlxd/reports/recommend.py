"""Which variant of a model to run on a machine: the fastest that fits and is good enough."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from mlxd.reports.data import Family, SystemFacts, VariantFigures
from mlxd.vocab import fmt


class RecommendError(ValueError):
    """Bad input (a memory size that cannot be read); one line for the user."""


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(|b|k|kb|m|mb|g|gb|t|tb|gib|mib)\s*$", re.I)
_UNITS = {
    "": 1e9,
    "b": 1,
    "k": 1e3,
    "kb": 1e3,
    "m": 1e6,
    "mb": 1e6,
    "g": 1e9,
    "gb": 1e9,
    "t": 1e12,
    "tb": 1e12,
    "mib": 2**20,
    "gib": 2**30,
}


def parse_memory(text: str) -> int:
    """``16GB``, ``16 gb``, ``512MB``, ``16`` (GB), ``24GiB`` -> bytes."""
    m = _SIZE.match(text)
    if not m:
        raise RecommendError(f"--memory takes a size such as 16GB or 512MB, not '{text}'")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value <= 0:
        raise RecommendError("--memory must be more than zero")
    return int(value)


def gb(n: float | None) -> str:
    """A memory figure in the unit that suits it (a small model needs '12.3 MB', not
    '0.01 GB'); '?' when unknown."""
    return "?" if n is None else fmt.size(n)


@dataclass(frozen=True)
class Recommendation:
    family: str
    host: str | None  # the machine whose figures were used
    host_note: str | None  # when that is not the machine asked for
    pick: VariantFigures | None
    runner_up: VariantFigures | None
    candidates: int  # variants measured on that machine
    lines: tuple[str, ...]  # what to tell the user (two lines when there is a pick)
    queue: str | None  # the command to run when figures are missing

    def to_dict(self) -> dict:
        def v(f: VariantFigures | None):
            if f is None:
                return None
            q = f.model.variant
            return {
                "model": f.model.name,
                "variant": q,
                "generation_tps": f.generation_tps,
                "prompt_tps": f.prompt_tps,
                "memory_needed_bytes": f.memory_needed_bytes,
                "method": f.model.method,
                "kl_mean": f.quality.kl_mean if f.quality else None,
                "accuracy": f.accuracy.accuracy if f.accuracy else None,
                "accuracy_drop": f.accuracy.drop if f.accuracy else None,
                "perplexity": f.quality.perplexity if f.quality else None,
                "run_id": f.run_id,
            }

        return {
            "family": self.family,
            "host": self.host,
            "host_note": self.host_note,
            "pick": v(self.pick),
            "runner_up": v(self.runner_up),
            "candidates": self.candidates,
            "explanation": list(self.lines),
            "queue": self.queue,
        }


def _kl(v: VariantFigures) -> float | None:
    """KL against the base; the base itself (unquantized, never compared) counts as 0."""
    if v.quality and v.quality.kl_mean is not None:
        return v.quality.kl_mean
    if not v.model.is_quantized and v.model.parent_id is None:
        return 0.0
    return None


def _choose_host(
    family: Family, machine: str | None, systems: dict[int, SystemFacts], memory: int | None
) -> tuple[str | None, str | None]:
    hosts = Counter(v.host for v in family.rows if v.generation_tps is not None)
    if not hosts:
        return None, None
    if machine and machine in hosts:
        return machine, None
    if machine:
        # Not measured there: the measured machine with the most similar memory.
        target = next(
            (s.ram_bytes for s in systems.values() if s.host == machine and s.ram_bytes), memory
        )
        ram = {h: max((s.ram_bytes or 0) for s in systems.values() if s.host == h) for h in hosts}
        if target:
            host = min(hosts, key=lambda h: (abs((ram[h] or 0) - target), -hosts[h]))
        else:
            host = hosts.most_common(1)[0][0]
        return host, f"no figures from {machine}; using {host}, the closest machine measured"
    return hosts.most_common(1)[0][0], None


def recommend(
    family: Family,
    systems: dict[int, SystemFacts],
    *,
    memory_bytes: int | None = None,
    max_kl: float | None = None,
    min_tps: float | None = None,
    machine: str | None = None,
    min_accuracy: float | None = None,
    max_accuracy_drop: float | None = None,
) -> Recommendation:
    """The fastest variant (generation tok/s) that fits ``memory_bytes`` (its measured
    peak, which includes the weights) and meets the quality, accuracy and speed bounds
    (accuracies as fractions: 0.6 is 60%; a drop in the same unit)."""
    sweep = f"mlxd sweep {family.name} --bits 4,6,8"
    host, note = _choose_host(family, machine, systems, memory_bytes)
    if host is None:
        return Recommendation(
            family.name,
            None,
            None,
            None,
            None,
            0,
            (
                f"No benchmark figures for any variant of {family.name} yet.",
                f"Queue them with: {sweep}",
            ),
            sweep,
        )
    rows = [v for v in family.rows if v.host == host and v.generation_tps is not None]
    rows.sort(key=lambda v: -(v.generation_tps or 0))
    reasons: dict[int, str] = {}
    for v in rows:
        need = v.memory_needed_bytes
        kl = _kl(v)
        if memory_bytes is not None and need is not None and need > memory_bytes:
            reasons[v.run_id] = f"needs {gb(need)}"
        elif max_kl is not None and kl is None:
            reasons[v.run_id] = "no quality figures"
        elif max_kl is not None and kl > max_kl:
            reasons[v.run_id] = f"KL {fmt.sig(kl, 3)} > {fmt.sig(max_kl, 6)}"
        elif (min_accuracy is not None or max_accuracy_drop is not None) and v.accuracy is None:
            reasons[v.run_id] = "no accuracy figures"
        elif min_accuracy is not None and v.accuracy.accuracy < min_accuracy:
            reasons[v.run_id] = f"accuracy {fmt.pct(v.accuracy.accuracy)} < {fmt.pct(min_accuracy)}"
        elif max_accuracy_drop is not None and v.accuracy.drop is None:
            reasons[v.run_id] = "no accuracy of the base on the same items"
        elif max_accuracy_drop is not None and v.accuracy.drop > max_accuracy_drop:
            reasons[v.run_id] = (
                f"accuracy drop {v.accuracy.drop * 100:.1f} pt > {max_accuracy_drop * 100:g} pt"
            )
        elif min_tps is not None and v.generation_tps < min_tps:
            reasons[v.run_id] = f"{v.generation_tps:.1f} tok/s < {fmt.sig(min_tps, 6)}"
    ok = [v for v in rows if v.run_id not in reasons]
    missing_quality = [v for v in rows if reasons.get(v.run_id) == "no quality figures"]
    queue = None
    if missing_quality:
        queue = "; ".join(f"mlxd quality {v.model.name}" for v in missing_quality[:3])
    missing_accuracy = [v for v in rows if reasons.get(v.run_id, "").startswith("no accuracy")]
    if missing_accuracy and not queue:
        queue = f"mlxd sweep {family.name} --bits 4,8 --eval builtin"
    bounds = _bounds(memory_bytes, max_kl, min_tps, min_accuracy, max_accuracy_drop)
    if not ok:
        why = "; ".join(f"{v.model.name} {reasons[v.run_id]}" for v in rows[:4])
        return Recommendation(
            family.name,
            host,
            note,
            None,
            None,
            len(rows),
            (
                f"No variant of {family.name} measured on {host} meets {bounds}: {why}.",
                "Try a larger --memory or looser bounds, or add smaller variants: "
                + (queue or f"mlxd sweep {family.name} --bits 2,3,4"),
            ),
            queue or f"mlxd sweep {family.name} --bits 2,3,4",
        )
    pick = ok[0]
    runner = ok[1] if len(ok) > 1 else None
    kl = _kl(pick)
    line1 = (
        f"{pick.model.name} ({pick.model.variant}) on {host}: {pick.generation_tps:.1f} tok/s "
        f"generation, needs {gb(pick.memory_needed_bytes)}"
        + (f" of {gb(memory_bytes)}" if memory_bytes else "")
        + (f", method {pick.model.method}" if pick.model.method else "")
        + (f", KL {fmt.sig(kl, 3)}" if kl is not None and pick.model.is_quantized else "")
        + (f", accuracy {fmt.pct(pick.accuracy.accuracy)}" if pick.accuracy else "")
        + f"; the fastest of {len(ok)} variant(s) within {bounds}."
    )
    parts = []
    if runner is not None:
        slower = (1 - runner.generation_tps / pick.generation_tps) * 100
        parts.append(
            f"Runner-up {runner.model.name} ({runner.generation_tps:.1f} tok/s, "
            f"{slower:.0f}% slower)"
        )
    # What would change the choice: the faster variants the bounds ruled out, or the budget
    # below which the pick no longer fits.
    faster_out = [v for v in rows if v.run_id in reasons and v.generation_tps > pick.generation_tps]
    if faster_out:
        parts.append(
            "faster but ruled out: "
            + ", ".join(
                f"{v.model.name} ({v.generation_tps:.1f} tok/s, {reasons[v.run_id]})"
                for v in faster_out[:3]
            )
        )
    elif pick.memory_needed_bytes:
        parts.append(f"below {gb(pick.memory_needed_bytes)} of memory the choice changes")
    line2 = "; ".join(parts) + "." if parts else "No other variant qualifies."
    lines = (line1, line2) if not note else (line1, line2, f"Note: {note}.")
    return Recommendation(family.name, host, note, pick, runner, len(rows), lines, queue)


def _bounds(
    memory: int | None,
    max_kl: float | None,
    min_tps: float | None,
    min_accuracy: float | None = None,
    max_accuracy_drop: float | None = None,
) -> str:
    parts = []
    if min_accuracy is not None:
        parts.append(f"accuracy >= {fmt.pct(min_accuracy)}")
    if max_accuracy_drop is not None:
        parts.append(f"accuracy drop <= {max_accuracy_drop * 100:g} pt")
    if memory is not None:
        parts.append(f"{gb(memory)} of memory")
    if max_kl is not None:
        parts.append(f"KL <= {fmt.sig(max_kl, 6)}")
    if min_tps is not None:
        parts.append(f">= {fmt.sig(min_tps, 6)} tok/s")
    return ", ".join(parts) if parts else "no bounds"
