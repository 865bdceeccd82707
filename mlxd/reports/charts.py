"""The HTML report's charts, drawn by matplotlib as SVG text (no pyplot, no display).

Every chart's data series carries an SVG id (matplotlib's ``gid``) so a reader's tools, and
the tests, can find the points: ``points-speed-memory``, ``points-quality-<model>``,
``pareto-<model>``, ``points-accuracy-<model>-<method>``, ``pareto-accuracy-<model>``,
``bars-generation-<model>``, ``depth-<model>``, ``loss-<job>``,
``history-date-<model>``, ``history-mlx-<model>``.
"""

from __future__ import annotations

import io
import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from mlxd.reports.data import Family, VariantFigures
from mlxd.vocab.fmt import point_label

COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    svg: str  # an <svg> element, ready to inline


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")


def _figure(width: float = 6.4, height: float = 3.6, *, left: float = 0.11, bottom: float = 0.15):
    import matplotlib

    # Text stays text (small files, selectable); ids are stable from run to run.
    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "mlxd"})
    from matplotlib.figure import Figure

    # Fixed margins, not a layout engine: constrained layout draws every figure twice and
    # doubled the time of a 100-model report.
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left, right=0.97, bottom=bottom, top=0.95, wspace=0.25)
    return fig


_HEAD = re.compile(r"^.*?(?=<svg)", re.S)
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.S)


def _svg(fig, chart_id: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = _HEAD.sub("", buf.getvalue(), count=1)
    text = _METADATA.sub("", text, count=1)  # matplotlib's RDF credits: not needed inline
    # Several SVGs share one page: make their internal ids (clip paths, markers) unique.
    ids = set(re.findall(r'id="([^"]+)"', text))
    keep = {
        i
        for i in ids
        if i.startswith(
            ("points-", "pareto-", "bars-", "depth-", "loss-", "history-", "errorbars-")
        )
    }
    rename = ids - keep

    def sub(m: re.Match) -> str:
        return f"{chart_id}-{m.group(0)}" if m.group(0) in rename else m.group(0)

    return _REF.sub(sub, text)


_REF = re.compile(r'(?<=["#(])[A-Za-z_][\w.-]*(?=[")])')


def distinct(parts: Sequence[Sequence[str]]) -> list[str]:
    """One label per item, no two alike: each item's first part, plus its next parts only
    where equal labels must be told apart (and a number as the last resort)."""
    labels = [p[0] for p in parts]
    for level in range(1, max((len(p) for p in parts), default=0)):
        counts = Counter(labels)
        if max(counts.values(), default=1) == 1:
            break
        labels = [
            f"{label} {p[level]}" if counts[label] > 1 and level < len(p) else label
            for label, p in zip(labels, parts, strict=True)
        ]
    counts, seen = Counter(labels), Counter()
    out = []
    for label in labels:
        if counts[label] > 1:
            seen[label] += 1
            label = f"{label} ({seen[label]})"
        out.append(label)
    return out


def variant_labels(rows: Sequence[VariantFigures], *, hosts: bool = False) -> list[str]:
    """The variant ("4bit-g64"), with the host where asked; two alike get their model's
    name, then their run."""
    return distinct(
        [
            (
                v.model.variant + (f" @{v.host}" if hosts else ""),
                f"({v.model.name})",
                f"run {v.run_id}",
            )
            for v in rows
        ]
    )


def annotate_apart(ax, xs, ys, texts, *, fontsize: float = 7) -> list:
    """Label each point beside it; a label that would cover one already placed moves up or
    down in steps of its height, with a thin line to its point. Measured by the renderer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = ax.figure
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    ax.get_xlim(), ax.get_ylim()  # settle the limits: labels are placed in display space
    step = fontsize + 2
    shifts = [0] + [k * s for k in range(1, 8) for s in (1, -1)]
    placed, out = [], []
    for i in sorted(range(len(texts)), key=lambda i: (ys[i], xs[i])):
        for shift in shifts:
            a = ax.annotate(
                texts[i],
                (xs[i], ys[i]),
                textcoords="offset points",
                xytext=(4, 4 + shift * step),
                fontsize=fontsize,
                arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.6"} if shift else None,
            )
            box = a.get_window_extent(renderer)
            if not any(box.overlaps(b) for b in placed) or shift == shifts[-1]:
                break
            a.remove()
        placed.append(box)
        out.append(a)
    return out


def speed_memory_points(families: list[Family]) -> list[tuple[Family, VariantFigures]]:
    """The variants the speed-memory chart shows: those with both figures (the dashboard
    draws the same points)."""
    return [
        (f, v)
        for f in families
        for v in f.rows
        if v.generation_tps is not None and v.memory_needed_bytes
    ]


def speed_memory(families: list[Family]) -> Chart | None:
    """Generation tok/s against peak memory, one colour per model."""
    rows = speed_memory_points(families)
    if not rows:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    xs, ys, cs = [], [], []
    color = {f.name: COLORS[i % len(COLORS)] for i, f in enumerate(families)}
    # The axis in the unit that suits its largest value (tiny models: MB, not 0.01 GB).
    largest = max(v.memory_needed_bytes for _, v in rows)
    unit, scale = next(
        (u, s)
        for u, s in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1))
        if largest >= s or s == 1
    )
    for f, v in rows:
        xs.append(v.memory_needed_bytes / scale)
        ys.append(v.generation_tps)
        cs.append(color[f.name])
    sc = ax.scatter(xs, ys, c=cs, s=36, zorder=3)
    sc.set_gid("points-speed-memory")
    if len(rows) <= 40:
        annotate_apart(ax, xs, ys, variant_labels([v for _, v in rows]))
    if len(families) <= 12:
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], marker="o", ls="", color=color[f.name], label=f.name)
            for f in families
            if any(r[0] is f for r in rows)
        ]
        ax.legend(handles=handles, fontsize=7, loc="best")
    ax.set_xlabel(f"peak memory ({unit})")
    ax.set_ylabel("generation tok/s")
    ax.grid(alpha=0.3)
    return Chart(
        "chart-speed-memory",
        "Generation speed against peak memory",
        _svg(fig, "chart-speed-memory"),
    )


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower x, higher y)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def quality_points(fam: Family) -> tuple[bool, list[tuple[float, float]], list[VariantFigures]]:
    """The speed-quality chart's points: (KL on x, else perplexity; the (x, tok/s) points;
    their variants). The dashboard draws the same points."""
    with_q = [v for v in fam.rows if v.quality and v.generation_tps is not None]
    use_kl = sum(v.quality.kl_mean is not None for v in with_q) >= 2
    pts: list[tuple[float, float]] = []
    shown: list[VariantFigures] = []
    for v in with_q:
        if use_kl:
            kl = v.quality.kl_mean
            if kl is None and v.model.is_quantized:
                continue
            x = kl or 0.0  # the base: KL 0 against itself
        else:
            x = v.quality.perplexity
        pts.append((x, v.generation_tps))
        shown.append(v)
    return use_kl, pts, shown


def speed_quality(fam: Family) -> Chart | None:
    """Generation tok/s against KL (or perplexity), the Pareto frontier marked."""
    use_kl, pts, shown = quality_points(fam)
    if not pts:
        return None
    s = slug(fam.name)
    fig = _figure()
    ax = fig.add_subplot()
    sc = ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=36, color=COLORS[0], zorder=3)
    sc.set_gid(f"points-quality-{s}")
    front = pareto_front(pts)
    fx, fy = [pts[i][0] for i in front], [pts[i][1] for i in front]
    (line,) = ax.plot(
        fx,
        fy,
        "--",
        color=COLORS[3],
        marker="o",
        mfc="none",
        ms=11,
        label="Pareto frontier",
        zorder=2,
    )
    line.set_gid(f"pareto-{s}")
    ax.margins(x=0.15, y=0.1)  # room for the labels at the edges
    labels = variant_labels(shown, hosts=len({r.host for r in fam.rows}) > 1)
    annotate_apart(ax, [p[0] for p in pts], [p[1] for p in pts], labels)
    ax.set_xlabel("KL divergence vs base (nats/token)" if use_kl else "perplexity")
    ax.set_ylabel("generation tok/s")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    cid = f"chart-quality-{s}"
    title = f"{fam.name}: speed against quality ({'KL' if use_kl else 'perplexity'})"
    return Chart(cid, title, _svg(fig, cid))


def accuracy_bits(fam: Family) -> Chart | None:
    """Task accuracy (or, without eval runs, KL against the base) against bits per weight,
    one series per quantization method, the Pareto front (fewer bits, better score) marked."""
    seen, models = set(), []
    for v in fam.rows:  # one point per model, whatever machine measured its speed
        if v.model.id not in seen and v.model.bits_per_weight:
            seen.add(v.model.id)
            models.append(v)
    with_acc = [v for v in models if v.accuracy is not None]
    use_acc = len(with_acc) >= 2
    if use_acc:
        shown = with_acc
        ys = [v.accuracy.accuracy for v in shown]
    else:
        shown = [v for v in models if v.quality and v.quality.kl_mean is not None]
        shown += [v for v in models if not v.model.is_quantized and v not in shown]
        ys = [v.quality.kl_mean if v.model.is_quantized else 0.0 for v in shown]
    if len(shown) < 2:
        return None
    xs = [v.model.bits_per_weight for v in shown]
    s = slug(fam.name)
    fig = _figure()
    ax = fig.add_subplot()
    methods = sorted({v.model.method or "base" for v in shown}, key=lambda m: (m != "base", m))
    for n, method in enumerate(methods):
        idx = [i for i, v in enumerate(shown) if (v.model.method or "base") == method]
        sc = ax.scatter(
            [xs[i] for i in idx],
            [ys[i] for i in idx],
            s=36,
            color=COLORS[n % len(COLORS)],
            label=method,
            zorder=3,
        )
        sc.set_gid(f"points-accuracy-{s}-{slug(method)}")
    # Fewer bits and a better score: accuracy up, KL down.
    front = pareto_front([(x, y if use_acc else -y) for x, y in zip(xs, ys, strict=True)])
    (line,) = ax.plot(
        [xs[i] for i in front],
        [ys[i] for i in front],
        "--",
        color=COLORS[3],
        label="Pareto front",
        zorder=2,
    )
    line.set_gid(f"pareto-accuracy-{s}")
    ax.margins(x=0.15, y=0.1)
    annotate_apart(ax, xs, ys, [v.model.variant for v in shown])
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("task accuracy" if use_acc else "KL divergence vs base (nats/token)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    cid = f"chart-accuracy-{s}"
    what = "accuracy" if use_acc else "KL"
    return Chart(cid, f"{fam.name}: {what} against bits per weight, by method", _svg(fig, cid))


def speed_bars(fam: Family) -> Chart | None:
    """Prompt and generation tok/s per variant, error bars from the trials (95% CI)."""
    rows = [v for v in fam.rows if v.generation_tps is not None]
    if not rows:
        return None
    s = slug(fam.name)
    labels = [
        label.replace(" @", "\n", 1)
        for label in variant_labels(rows, hosts=len({v.host for v in rows}) > 1)
    ]
    fig = _figure(6.4, 3.2 + 0.1 * len(rows), left=0.18)
    axes = fig.subplots(1, 2)
    for ax, metric, title in (
        (axes[0], "prompt", "prompt tok/s"),
        (axes[1], "generation", "generation tok/s"),
    ):
        vals = [getattr(v, f"{metric}_tps") or 0 for v in rows]
        errs = [_err(v, metric) for v in rows]
        bars = ax.barh(
            range(len(rows)),
            vals,
            xerr=errs,
            color=COLORS[0 if metric == "prompt" else 1],
            capsize=3,
        )
        for i, patch in enumerate(bars.patches):
            patch.set_gid(f"bars-{metric}-{s}-{i}")
        if bars.errorbar is not None and bars.errorbar.lines[2]:
            bars.errorbar.lines[2][0].set_gid(f"errorbars-{metric}-{s}")
        ax.set_yticks(
            range(len(rows)), labels if metric == "prompt" else [""] * len(rows), fontsize=7
        )
        ax.set_xlabel(title)
        ax.grid(alpha=0.3, axis="x")
    cid = f"chart-bars-{s}"
    return Chart(cid, f"{fam.name}: prompt and generation speed (± 95% CI)", _svg(fig, cid))


def _err(v: VariantFigures, metric: str) -> float:
    ci = getattr(v, f"{metric}_tps_ci95")
    if ci is not None and math.isfinite(ci):
        return ci
    return 0.0


def depth_chart(fam: Family) -> Chart | None:
    if not fam.depth_series:
        return None
    s = slug(fam.name)
    fig = _figure()
    ax = fig.add_subplot()
    series = fam.depth_series[:10]
    names = distinct([(f"{ser.model} @{ser.host}", point_label(ser.point)) for ser in series])
    for i, (ser, name) in enumerate(zip(series, names, strict=True)):
        xs = [p.depth for p in ser.points]
        ys = [p.generation_tps for p in ser.points]
        (line,) = ax.plot(xs, ys, marker="o", color=COLORS[i % len(COLORS)], label=name)
        line.set_gid(f"depth-{s}-{i}")
    ax.set_xlabel("context depth (tokens already in the cache)")
    ax.set_ylabel("generation tok/s")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    cid = f"chart-depth-{s}"
    return Chart(cid, f"{fam.name}: generation speed against context depth", _svg(fig, cid))


def loss_charts(fam: Family) -> list[Chart]:
    out = []
    for ft in fam.finetunes:
        if not ft.train_losses and not ft.val_losses:
            continue
        fig = _figure(6.4, 3.2)
        ax = fig.add_subplot()
        for losses, name, color in (
            (ft.train_losses, "train", COLORS[0]),
            (ft.val_losses, "validation", COLORS[1]),
        ):
            if losses:
                (line,) = ax.plot(
                    [x for x, _ in losses],
                    [y for _, y in losses],
                    marker=".",
                    color=color,
                    label=name,
                )
                line.set_gid(f"loss-{ft.job_id}-{name}")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        cid = f"chart-loss-{ft.job_id}"
        out.append(Chart(cid, f"Fine-tuning job {ft.job_id} ({ft.model}): loss", _svg(fig, cid)))
    return out


def history_chart(fam: Family) -> Chart | None:
    """Generation tok/s of each variant over time (per day) and per mlx version."""
    if not fam.history:
        return None
    days = {h.day for h in fam.history}
    versions = {h.mlx_version for h in fam.history}
    if len(days) < 2 and len(versions) < 2:
        return None
    s = slug(fam.name)
    fig = _figure(6.4, 3.4, bottom=0.22)
    ax_d, ax_v = fig.subplots(1, 2, width_ratios=(2, 1))
    from datetime import date

    by_series: dict[tuple[str, str], dict[str, list[tuple[float, int]]]] = defaultdict(dict)
    for h in fam.history:
        by_series[(h.model, h.host)].setdefault(h.day, []).append((h.generation_tps, h.runs))
    for i, ((model, host), per_day) in enumerate(sorted(by_series.items())[:10]):
        xs = sorted(per_day)
        ys = [sum(t * n for t, n in per_day[d]) / sum(n for _, n in per_day[d]) for d in xs]
        (line,) = ax_d.plot(
            [date.fromisoformat(d) for d in xs],
            ys,
            marker=".",
            color=COLORS[i % len(COLORS)],
            label=f"{model} @{host}",
        )
        line.set_gid(f"history-date-{s}-{i}")
    ax_d.set_ylabel("generation tok/s")
    ax_d.set_xlabel("date")
    ax_d.tick_params(axis="x", labelsize=7, rotation=30)
    ax_d.legend(fontsize=6)
    ax_d.grid(alpha=0.3)
    order = sorted(versions, key=_version_key)
    for i, ((model, host), _) in enumerate(sorted(by_series.items())[:10]):
        per_v: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for h in fam.history:
            if (h.model, h.host) == (model, host):
                per_v[h.mlx_version].append((h.generation_tps, h.runs))
        xs = [order.index(v) for v in order if v in per_v]
        ys = [
            sum(t * n for t, n in per_v[v]) / sum(n for _, n in per_v[v])
            for v in order
            if v in per_v
        ]
        (line,) = ax_v.plot(xs, ys, marker="o", color=COLORS[i % len(COLORS)])
        line.set_gid(f"history-mlx-{s}-{i}")
    ax_v.set_xticks(range(len(order)), order, fontsize=7, rotation=30)
    ax_v.set_xlabel("mlx version")
    ax_v.grid(alpha=0.3)
    cid = f"chart-history-{s}"
    return Chart(cid, f"{fam.name}: generation speed over time and by mlx version", _svg(fig, cid))


def _version_key(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.+-]", v))


def family_charts(fam: Family) -> list[Chart]:
    charts = [
        speed_quality(fam),
        accuracy_bits(fam),
        speed_bars(fam),
        depth_chart(fam),
        history_chart(fam),
    ]
    return [ch for ch in charts if ch is not None] + loss_charts(fam)
