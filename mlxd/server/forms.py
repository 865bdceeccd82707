"""The dashboard's submit forms: a form's fields go to the JSON API's submit
(``api.submit``: the CLI's own command, run for the user), so the validation and the one-line
messages are the CLI's by construction; a refusal is shown beside the field it names."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

KINDS = ("bench", "quantize", "sweep", "pull")

# Each form's fields (the CLI's option names with '_'), in the order the form shows them.
FIELDS: dict[str, tuple[str, ...]] = {
    "quantize": ("model", "bits", "group_size", "mode", "recipe", "dtype", "name"),
    "bench": ("model", "prompt_tokens", "gen_tokens", "trials", "warmup"),
    "sweep": ("model", "bits", "group_size", "prompt_tokens", "gen_tokens", "trials"),
    "pull": ("repo", "name"),
}
COMMON = ("priority", "pool")
SHORT_FLAGS = {"-p": "prompt_tokens", "-g": "gen_tokens", "-n": "trials"}


class FieldError(ValueError):
    """A refused form: the one-line message, and the field it is about (None: the form)."""

    def __init__(self, message: str, field: str | None):
        super().__init__(message)
        self.message, self.field = message, field


@dataclass
class Submitted:
    job_ids: list[int]
    notes: list[str]


_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z-]*|-[pgn])\b")


def field_of(kind: str, message: str) -> str | None:
    """The field a one-line message is about: the first option it names (``--bits``,
    ``-g``); a message about the model or a name goes beside those."""
    fields = FIELDS[kind] + COMMON
    for flag in _FLAG.findall(message):
        name = SHORT_FLAGS.get(flag) or flag.lstrip("-").replace("-", "_")
        if name in fields:
            return name
    low = message.lower()
    if "model name" in low or "a model named" in low:
        return "name" if "name" in fields else None
    if kind == "pull" and ("repo" in low or "revision" in low):
        return "repo"
    if "model" in low and "model" in fields:
        return "model"
    return None


def submit_form(request, principal, kind: str, form: dict[str, str]) -> Submitted:
    """Queue what the form asks for, as ``principal``, through the API's submit; FieldError
    (naming the field) with the CLI's line if refused."""
    from mlxd.server import api

    if kind not in KINDS:
        raise FieldError(f"no form for '{kind}'; choose from {', '.join(KINDS)}", None)
    allowed = FIELDS[kind] + COMMON
    fields = {k: v.strip() for k, v in form.items() if k in allowed and v.strip()}
    answer = api.submit(kind, request, principal, fields)
    body = json.loads(answer.body)
    if answer.status_code >= 300:
        message = body.get("error") or f"refused ({answer.status_code})"
        raise FieldError(message, field_of(kind, message))
    return Submitted(body["job_ids"], body.get("notes", []))
