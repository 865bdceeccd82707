"""The model card a push uploads: the hub's YAML header, the recipe, lineage, latest figures.

Built from catalog rows only (no mlx), read through the Reader. Nothing secret goes in: no token, no local user name;
paths are not included either (they mean nothing on the hub).
"""

from __future__ import annotations

from typing import Any

from mlxd.vocab import fmt
from mlxd.vocab.choices import model_quant_label, quant_method_facts


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _origin(reader, model) -> str:
    snap = reader.hub_snapshot(model.id)
    if snap is not None:
        return (
            f"pulled from [{snap.repo_id}](https://huggingface.co/{snap.repo_id}) at commit "
            f"`{snap.commit_sha}`"
        )
    return {
        "synth": "random weights (synthetic)",
        "local": "a local folder",
        "gguf": "a GGUF file",
    }.get(model.source, model.source)


def _recipe(model) -> list[str]:
    lines = []
    recipe = (model.details or {}).get("recipe") or {}
    for step, params in recipe.items():
        shown = ", ".join(f"{k}={v}" for k, v in params.items() if v is not None)
        lines.append(f"- {step}: {shown or 'defaults'}")
    if model.quant_bits or model.quant_mode or model.quant_recipe:
        label = model_quant_label(model)
        lines.append(
            f"- quantization: {model.quant_recipe or model.quant_mode or 'affine'}"
            + (f" ({label})" if label else "")
            + (f", {model.quant_bits} bits" if model.quant_bits else "")
            + (f", group size {model.quant_group_size}" if model.quant_group_size else "")
            + (f" ({model.bits_per_weight:.2f} bits per weight)" if model.bits_per_weight else "")
        )
        lines += [f"- {label}: {text}" for label, text in quant_method_facts(model)]
    return lines


def model_card(reader, model_id: int, repo_id: str, *, runs_shown: int = 5) -> str:
    """README.md for catalog model ``model_id`` pushed as ``repo_id`` (``reader``: a
    :class:`mlxd.catalog.read.Reader`)."""
    from mlxd.catalog.read import ResultFilter

    model = reader.model_by_id(model_id)
    chain = [model, *reader.ancestors(model.id)]
    base_repo = None
    for ancestor in chain[1:]:  # the nearest ancestor that came from the hub
        snap = reader.hub_snapshot(ancestor.id)
        if snap is not None:
            base_repo = snap.repo_id
            break
    tags = ["mlx"]
    if model.architecture:
        tags.append(model.architecture)
    if model.quant_bits or model.quant_mode:
        tags.append("quantized")
        if model.quant_bits:
            tags.append(f"{model.quant_bits}-bit")
    if model.synthetic:
        tags.append("synthetic")
    header = ["---", "library_name: mlx", "pipeline_tag: text-generation"]
    if base_repo:
        header.append(f"base_model: {base_repo}")
    header.append("tags:")
    header += [f"- {t}" for t in tags]
    header.append("---")

    body = [f"# {repo_id}", ""]
    if model.synthetic:
        body += [
            "> Random weights (a synthetic model): speed figures are real for this shape; "
            "generated text is meaningless.",
            "",
        ]
    body += [f"An MLX model ({model.architecture or 'unknown architecture'}), made with mlxd."]
    if base_repo:
        body += ["", f"Base model: [{base_repo}](https://huggingface.co/{base_repo})."]
    recipe = _recipe(model)
    if recipe:
        body += ["", "## Recipe", "", *recipe]
    body += ["", "## Lineage", ""]
    for depth, m in enumerate(chain):
        how = _origin(reader, m) if m.parent_id is None else f"{m.source} of the model below"
        body.append(f"{depth + 1}. `{m.name}`: {how}")

    runs = reader.result_rows(ResultFilter(models=(str(model.id),)))
    runs = [r for r in runs if r["adapter"] is None][-runs_shown:]  # the model's own
    if runs:
        body += [
            "",
            "## Benchmark",
            "",
            "| prompt tokens | generated tokens | batch | prompt tok/s | generation tok/s "
            "| time to first token (s) | peak memory | machine | mlx |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in runs:
            peak = fmt.size(r["peak_memory_bytes"]) or None  # a unit per value
            body.append(
                f"| {r['prompt_tokens']} | {r['gen_tokens']} | {r['batch_size']} "
                f"| {_fmt(r['prompt_tps_mean'])} | {_fmt(r['generation_tps_mean'])} "
                f"| {_fmt(r['ttft_s_mean'], 3)} | {_fmt(peak)} "
                f"| {r['chip'] or r['cpu']} ({r['backend']}) | {r['mlx_version']} |"
            )
    quality = reader.quality_rows([model.id])
    if quality:
        q = quality[-1]
        body += [
            "",
            "## Quality",
            "",
            "| text | tokens | perplexity | base perplexity | KL (nats/token) | top-1 agreement |",
            "|---|---|---|---|---|---|",
            f"| {q['text_name']} | {q['tokens']} | {_fmt(q['perplexity'], 3)} "
            f"| {_fmt(q['base_perplexity'], 3)} | {_fmt(q['kl_mean'], 4)} "
            f"| {_fmt(q['top1_agreement'], 3)} |",
        ]
    body += [
        "",
        "## Use",
        "",
        "```python",
        "from mlx_lm import load, generate",
        "",
        f'model, tokenizer = load("{repo_id}")',
        'print(generate(model, tokenizer, prompt="Hello", max_tokens=64))',
        "```",
        "",
    ]
    return "\n".join(header + [""] + body)
