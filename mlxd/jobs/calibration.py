"""Calibration text for learned quantization (AWQ, GPTQ, DWQ, dynamic), read offline.

mlx-lm's quantization scripts download their calibration text at run time; mlxd reads it from
``--calibration`` (a text file, a ``.jsonl`` file of ``text`` records or any fine-tuning data
layout: a folder with ``train.jsonl``, chat or prompt/completion records) or, without it, the
prose that ships in the package (``mlxd/data/corpus.txt``, see ``mlxd/data/README.md``).
Plain Python, no mlx: the CLI reads it to refuse a text too short for the samples asked before
anything is queued, and the job's child reads it again and tokenizes it with the model's own
tokenizer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mlxd.vocab.errors import SpecError

PACKAGED = "data/corpus.txt"  # inside the mlxd package
PACKAGED_NAME = "mlxd/data/corpus.txt"


@dataclass
class Calibration:
    """The calibration texts and where they came from."""

    texts: list[str]
    sha256: str  # of the source's bytes (a folder: its data files in split order)
    source: str  # the path, or PACKAGED_NAME

    def token_count(self, tokenizer_json: Path) -> int | None:
        """Tokens of all texts by the model's tokenizer.json (plain ``tokenizers``, no mlx),
        or None when the model folder has none (the job counts again with mlx-lm's)."""
        if not Path(tokenizer_json).is_file():
            return None
        try:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(tokenizer_json))
        except Exception:  # noqa: BLE001 - an unreadable tokenizer: the job judges
            return None
        return sum(len(e.ids) for e in tok.encode_batch(self.texts, add_special_tokens=False))


def packaged_text() -> str:
    return resources.files("mlxd").joinpath(PACKAGED).read_text(encoding="utf-8")


def read_calibration(path: str | None) -> Calibration:
    """The texts of ``path`` (None: the packaged prose); a SpecError names what is wrong."""
    if path is None:
        text = packaged_text()
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return Calibration([text], digest, PACKAGED_NAME)
    src = Path(path).expanduser()
    if not src.exists():
        raise SpecError(f"calibration data '{path}' not found")
    if src.is_dir() or src.suffix in (".jsonl", ".json"):
        from mlxd.jobs.finetune_data import Features, load_training_data, record_texts

        data = load_training_data(src, valid_fraction=0.5)
        features = Features()
        texts = [
            "\n".join(record_texts(r, data.format, features))
            for split in ("train", "valid", "test")
            for r in data.splits.get(split, [])
        ]
        return Calibration([t for t in texts if t], data.sha256, str(src.resolve()))
    raw = src.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SpecError(f"calibration text {src} is not UTF-8") from None
    if not text.strip():
        raise SpecError(f"calibration text {src} is empty")
    return Calibration([text], hashlib.sha256(raw).hexdigest(), str(src.resolve()))


def check_enough_tokens(source: str, tokens: int, samples: int, length: int) -> None:
    """Refuse calibration text shorter than ``samples`` non-overlapping runs of ``length``."""
    needed = samples * length
    if tokens < needed:
        raise SpecError(
            f"calibration text {source} has {tokens:,} tokens; {samples} samples of {length} "
            f"tokens need {needed:,}: lower --calibration-samples or --calibration-length, or "
            "give a longer --calibration file"
        )
