"""A multi-turn chat that keeps its KV cache between turns.

Each turn renders the whole conversation with the model's chat template, keeps the part of
the cache whose tokens still match (the common prefix) and prefills only the rest: the
second turn costs its new tokens, not the whole history again.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlxd.vocab.sampling import Sampling

from .types import GenerationStats

# Without a chat template: a plain transcript the model can continue.
PLAIN_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}


@dataclass
class ReplyStats(GenerationStats):
    """One reply's figures; ``reused_tokens`` were already in the KV cache."""

    reused_tokens: int = 0
    interrupted: bool = False


@dataclass
class ChatSession:
    """A conversation with one loaded model. Build with ``ChatSession.load(path, ...)``."""

    model: Any
    tokenizer: Any
    sampling: Sampling = field(default_factory=Sampling)
    system: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    last: ReplyStats | None = None
    _cache: list[Any] | None = None
    _cached_tokens: list[int] = field(default_factory=list)

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        adapter_path: Path | None = None,
        sampling: Sampling | None = None,
        system: str | None = None,
        prompt_cache_path: Path | None = None,
    ) -> ChatSession:
        from mlx_lm import load

        model, tokenizer = load(str(path), adapter_path=str(adapter_path) if adapter_path else None)
        session = cls(model, tokenizer, sampling or Sampling(), system)
        if prompt_cache_path is not None:
            from .prompt_cache import load_cache_file

            cache, meta = load_cache_file(prompt_cache_path)
            session._cache, session._cached_tokens = cache, list(meta["tokens"])
            if session.system is None and meta.get("system"):
                session.system = meta["system"]  # a cache of a system prompt starts the chat
        return session

    @property
    def has_template(self) -> bool:
        return self.tokenizer.chat_template is not None

    def conversation(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.messages

    def render(self, messages: list[dict[str, str]] | None = None) -> list[int]:
        """Token ids of the conversation, ending where the assistant's reply begins."""
        messages = self.conversation() if messages is None else messages
        if self.has_template:
            return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True))
        text = "".join(
            f"{PLAIN_ROLES.get(m['role'], m['role'])}: {m['content']}\n" for m in messages
        )
        return list(self.tokenizer.encode(text + "Assistant:"))

    # -- commands ------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        self.messages = []

    def set_system(self, text: str | None) -> None:
        self.system = text or None

    def save(self, path: Path) -> None:
        data = {"system": self.system, "messages": self.messages}
        Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    def load_conversation(self, path: Path) -> None:
        """Messages from a /save file, or a plain list of {role, content} messages."""
        data = json.loads(Path(path).read_text())
        if isinstance(data, list):
            data = {"messages": data}
        messages = check_messages(data.get("messages"))
        system = data.get("system")
        if messages and messages[0]["role"] == "system":
            system, messages = messages[0]["content"], messages[1:]
        self.system, self.messages = system, messages

    # -- replies ---------------------------------------------------------------------------

    def reply(self, text: str) -> Generator[str, None, None]:
        """Add a user message and stream the assistant's reply, piece by piece.

        Closing the generator early (Ctrl-C) keeps what was said so far as the reply.
        """
        self.messages.append({"role": "user", "content": text})
        return self.respond()

    def respond(self) -> Generator[str, None, None]:
        """Stream the assistant's reply to the conversation as it stands."""
        import mlx.core as mx

        from .generate import stream_responses

        tokens = self.render()
        reused = self._reuse_prefix(tokens)
        stats = ReplyStats(reused_tokens=reused)
        self.last = stats
        generated: list[int] = []
        pieces: list[str] = []
        mx.reset_peak_memory()
        try:
            for response in stream_responses(
                self.model,
                self.tokenizer,
                tokens[reused:],
                self.sampling,
                prompt_cache=self._cache,
                stats=stats,
            ):
                generated.append(int(response.token))
                if response.text:
                    pieces.append(response.text)
                    yield response.text
        except BaseException:  # Ctrl-C (or closing the generator): keep the partial reply
            stats.interrupted = True
            raise
        finally:
            self._settle_cache(tokens + generated)
            self.messages.append({"role": "assistant", "content": "".join(pieces)})

    def _reuse_prefix(self, tokens: list[int]) -> int:
        """Trim the cache to what it shares with ``tokens``; how many tokens it keeps."""
        from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache

        if self._cache is None:
            self._cache, self._cached_tokens = make_prompt_cache(self.model), []
        common = 0
        for a, b in zip(self._cached_tokens, tokens, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(tokens) - 1)  # at least one token must go through the model
        excess = len(self._cached_tokens) - common
        if excess > 0:
            if can_trim_prompt_cache(self._cache):
                trim_prompt_cache(self._cache, excess)
            else:  # e.g. a rotating or recurrent cache: start again
                self._cache, common = make_prompt_cache(self.model), 0
        self._cached_tokens = tokens[:common]
        return common

    def _settle_cache(self, seen: list[int]) -> None:
        """After a reply: record which tokens the cache now holds (it may be a few short)."""
        held = _cache_offset(self._cache)
        if held is None:
            self._cache, self._cached_tokens = None, []
            return
        if held > len(seen):  # computed ahead of what we know: drop the surplus
            from mlx_lm.models.cache import trim_prompt_cache

            trim_prompt_cache(self._cache, held - len(seen))
            held = len(seen)
        self._cached_tokens = seen[:held]


def _cache_offset(cache: list[Any] | None) -> int | None:
    if not cache:
        return None
    offset = getattr(cache[0], "offset", None)
    return int(offset) if isinstance(offset, int) else None


def check_messages(messages: Any) -> list[dict[str, str]]:
    """A list of {"role": system|user|assistant, "content": text}, or ValueError."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("expected a non-empty list of messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise ValueError(f"message {i + 1} needs a text 'content'")
        if m.get("role") not in PLAIN_ROLES:
            raise ValueError(
                f"message {i + 1} has role {m.get('role')!r}; use system, user or assistant"
            )
        out.append({"role": m["role"], "content": m["content"]})
    return out
