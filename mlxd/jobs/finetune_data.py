"""Fine-tuning data: read, check and split it in plain Python (no mlx), at submit and in the job.

Accepted, as mlx-lm reads them:

- a folder with ``train.jsonl`` (and optionally ``valid.jsonl``, ``test.jsonl``);
- a single ``.jsonl`` file, or a ``.json`` file holding a list of records: split into train
  and valid by a seeded shuffle (the same seed gives the same split, stated in the job row).

Records are chat (``messages``, optional ``tools``), ``prompt``/``completion`` or ``text``
(the field names can be changed as in mlx-lm's config: ``chat_feature`` and friends). Every
problem is a one-line ``SpecError`` naming the file, the line and why.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlxd.vocab.errors import SpecError
from mlxd.vocab.fmt import sig

SPLITS = ("train", "valid", "test")
DEFAULT_VALID_FRACTION = 0.1


@dataclass
class Features:
    """The record fields of each format (mlx-lm's ``*_feature`` config keys)."""

    text: str = "text"
    chat: str = "messages"
    prompt: str = "prompt"
    completion: str = "completion"


@dataclass
class TrainingData:
    """The records of each split, with where they came from."""

    source: Path
    format: str  # "chat" | "completions" | "text"
    splits: dict[str, list[dict[str, Any]]]
    files: dict[str, str] = field(default_factory=dict)  # split -> file it was read from
    sha256: str = ""  # of the files' bytes, in split order
    split_note: str | None = None  # how a single file was split

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}


def record_format(record: Any, features: Features) -> str:
    """The format of one record, or a SpecError saying what it lacks."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    f = features
    if f.prompt in record or f.completion in record:
        for key, other in ((f.prompt, f.completion), (f.completion, f.prompt)):
            if key not in record:
                raise ValueError(f"has '{other}' but no '{key}'")
        for key in (f.prompt, f.completion):
            if not isinstance(record[key], str):
                raise ValueError(f"'{key}' must be a string")
        return "completions"
    if f.chat in record:
        messages = record[f.chat]
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"'{f.chat}' must be a non-empty list of messages")
        for i, m in enumerate(messages, 1):
            if not isinstance(m, dict) or "role" not in m:
                raise ValueError(f"message {i} has no 'role'")
            if "content" not in m and "tool_calls" not in m:
                raise ValueError(f"message {i} has no 'content'")
        tools = record.get("tools")
        if tools is not None and not isinstance(tools, list):
            raise ValueError("'tools' must be a list")
        return "chat"
    if f.text in record:
        if not isinstance(record[f.text], str) or not record[f.text]:
            raise ValueError(f"'{f.text}' must be a non-empty string")
        return "text"
    raise ValueError(
        f"has no '{f.chat}', '{f.prompt}'/'{f.completion}' or '{f.text}' field "
        f"(keys: {', '.join(sorted(record)) or 'none'})"
    )


def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
    rows = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise SpecError(f"{path.name} is not UTF-8 text") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            raise SpecError(f"{path.name} line {lineno}: not valid JSON ({e.msg})") from None
    return rows


def _read_json_list(path: Path) -> list[tuple[int, Any]]:
    try:
        value = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise SpecError(f"{path.name} is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise SpecError(f"{path.name} line {e.lineno}: not valid JSON ({e.msg})") from None
    if isinstance(value, dict):
        # {"train": [...], "valid": [...]} is not a format mlx-lm reads; a list is.
        raise SpecError(f"{path.name} must hold a JSON list of records, not an object")
    if not isinstance(value, list):
        raise SpecError(f"{path.name} must hold a JSON list of records")
    return list(enumerate(value, 1))


def _check_records(
    name: str, rows: list[tuple[int, Any]], features: Features, unit: str
) -> tuple[str, list[dict[str, Any]]]:
    fmt, first = None, None
    for where, record in rows:
        try:
            this = record_format(record, features)
        except ValueError as e:
            raise SpecError(f"{name} {unit} {where}: {e}") from None
        if fmt is None:
            fmt, first = this, where
        elif this != fmt:
            raise SpecError(
                f"{name} mixes formats: {unit} {first} is {fmt}, {unit} {where} is {this}"
            )
    return fmt or "", [r for _, r in rows]


def load_training_data(
    path: str | Path,
    *,
    features: Features | None = None,
    seed: int = 0,
    valid_fraction: float = DEFAULT_VALID_FRACTION,
) -> TrainingData:
    """Read and check the data at ``path``; a single file is split into train and valid."""
    features = features or Features()
    src = Path(path).expanduser()
    if not src.exists():
        raise SpecError(f"data '{path}' not found")
    digest = hashlib.sha256()
    files: dict[str, str] = {}
    splits: dict[str, list[dict[str, Any]]] = {}
    formats: dict[str, str] = {}
    note = None
    if src.is_dir():
        if not (src / "train.jsonl").is_file():
            raise SpecError(f"no train.jsonl in {src} (a training set is needed)")
        for split in SPLITS:
            f = src / f"{split}.jsonl"
            if not f.is_file():
                continue
            digest.update(f.read_bytes())
            fmt, records = _check_records(f.name, _read_jsonl(f), features, "line")
            if records:
                splits[split], formats[split], files[split] = records, fmt, str(f.resolve())
        if not splits.get("train"):
            raise SpecError(f"{src / 'train.jsonl'} has no examples")
    else:
        digest.update(src.read_bytes())
        if src.suffix == ".json":
            rows, unit = _read_json_list(src), "record"
        elif src.suffix == ".jsonl":
            rows, unit = _read_jsonl(src), "line"
        else:
            raise SpecError(f"data '{path}' must be a folder, a .jsonl file or a .json file")
        fmt, records = _check_records(src.name, rows, features, unit)
        if len(records) < 2:
            raise SpecError(f"{src.name} has {len(records)} example(s); at least 2 are needed")
        if not 0 < valid_fraction < 1:
            raise SpecError("the validation fraction must be between 0 and 1")
        order = list(range(len(records)))
        random.Random(seed).shuffle(order)
        n_valid = max(1, round(len(records) * valid_fraction))
        valid_idx = sorted(order[:n_valid])
        train_idx = sorted(order[n_valid:])
        splits = {
            "train": [records[i] for i in train_idx],
            "valid": [records[i] for i in valid_idx],
        }
        formats = {"train": fmt, "valid": fmt}
        files = {"train": str(src.resolve()), "valid": str(src.resolve())}
        note = (
            f"{src.name} split by seed {seed}: {len(train_idx)} train, {len(valid_idx)} valid "
            f"({sig(valid_fraction, 6)} held out)"
        )
    kinds = set(formats.values())
    if len(kinds) > 1:
        described = ", ".join(f"{s} is {f}" for s, f in formats.items())
        raise SpecError(f"mixed formats across the data files: {described}")
    return TrainingData(
        source=src.resolve(),
        format=kinds.pop(),
        splits=splits,
        files=files,
        sha256=digest.hexdigest(),
        split_note=note,
    )


def check_batches(data: TrainingData, batch_size: int) -> None:
    """mlx-lm needs at least one full batch in every split it reads."""
    for split, records in data.splits.items():
        if len(records) < batch_size:
            raise SpecError(
                f"the {split} set has {len(records)} example(s), fewer than --batch-size "
                f"{batch_size}; lower --batch-size or add examples"
            )


def record_texts(record: dict[str, Any], fmt: str, features: Features) -> list[str]:
    """The text a record contributes to its token count (without any chat template)."""
    if fmt == "text":
        return [record[features.text]]
    if fmt == "completions":
        return [record[features.prompt], record[features.completion]]
    return [str(m.get("content") or "") for m in record[features.chat]]


def count_too_long(
    data: TrainingData, tokenizer_json: Path, max_seq_length: int, features: Features | None = None
) -> tuple[int, int, int] | None:
    """(too long, examples, shortest length) of the training set, or None without a tokenizer."""
    if not tokenizer_json.is_file():
        return None
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_json))
    except Exception:  # noqa: BLE001
        return None
    features = features or Features()
    texts = ["".join(record_texts(r, data.format, features)) for r in data.splits["train"]]
    lengths = [len(e.ids) + 1 for e in tok.encode_batch(texts, add_special_tokens=False)]
    return sum(n > max_seq_length for n in lengths), len(lengths), min(lengths)


def check_length_limit(
    data: TrainingData, tokenizer_json: Path, max_seq_length: int, features: Features | None = None
) -> str | None:
    """Refuse data whose every example would be truncated; a note when some would be."""
    counted = count_too_long(data, tokenizer_json, max_seq_length, features)
    if counted is None:
        return None
    too_long, total, shortest = counted
    if too_long == total:
        raise SpecError(
            f"all {total} training examples are longer than --max-seq-length {max_seq_length} "
            f"tokens (shortest: {shortest}) and would be truncated; raise --max-seq-length "
            "or shorten them"
        )
    if too_long:
        return (
            f"{too_long} of {total} training examples are longer than --max-seq-length "
            f"{max_seq_length} tokens and will be truncated"
        )
    return None
