"""mlxd chat: a multi-turn conversation in the terminal, in this process (no queue)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mlxd.cli.context import BadUsage, UserError, catalog_errors
from mlxd.cli.generate_cmd import adapter_path, usable_model, usable_prompt_cache
from mlxd.cli.sampling_opts import pop_sampling, sampling_options

HELP = (
    "Commands: /reset  /system TEXT  /save FILE  /load FILE  /stats  /help  /quit. "
    "Ctrl-C stops a reply; Ctrl-D or /quit leaves."
)


@click.command()
@click.argument("ref")
@click.option("--system", help="System prompt")
@click.option("--adapter", metavar="ADAPTER", help="Run with this fine-tuned adapter (unfused)")
@click.option("--prompt-cache", help="A prompt cache (see 'mlxd cache-prompt') to start from")
@sampling_options
@click.option(
    "--once",
    is_flag=True,
    help="Read a messages JSON on stdin, print the reply and exit (for scripts)",
)
@click.option(
    "--memory-check/--no-memory-check",
    default=True,
    help="Refuse a model that clearly does not fit in memory",
)
@catalog_errors
def chat(ref, system, adapter, prompt_cache, once, memory_check, **kwargs):
    """Chat with a model in the terminal, keeping its KV cache across turns."""
    sampling = pop_sampling(kwargs)
    model = usable_model(ref, memory_check=memory_check)
    cache = usable_prompt_cache(prompt_cache, model)
    messages = _read_messages(sys.stdin.read()) if once else None
    from mlxd.engine.chat import ChatSession

    session = ChatSession.load(
        Path(model.path),
        adapter_path=adapter_path(adapter, model),
        sampling=sampling,
        system=system,
        prompt_cache_path=Path(cache.path) if cache else None,
    )
    if not session.has_template:
        click.echo(
            f"Note: model '{model.name}' has no chat template; using a plain "
            "'User: ... / Assistant:' format.",
            err=True,
        )
    if once:
        _once(session, messages)
        return
    _interactive(session, model.name)


def _read_messages(text: str) -> list[dict[str, str]]:
    from mlxd.engine.chat import check_messages

    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadUsage(f"--once expects a JSON list of messages on stdin ({e.msg})") from None
    if isinstance(data, dict):
        data = data.get("messages")
    try:
        messages = check_messages(data)
    except ValueError as e:
        raise BadUsage(f"--once: {e}") from None
    if messages[-1]["role"] != "user":
        raise BadUsage("--once: the last message must be the user's")
    return messages


def _once(session, messages) -> None:
    if messages[0]["role"] == "system":
        session.set_system(messages[0]["content"])
        messages = messages[1:]
    session.messages = list(messages)
    for piece in session.respond():
        click.echo(piece, nl=False)
    click.echo()


def _interactive(session, name: str) -> None:
    click.echo(f"Chatting with {name}. {HELP}", err=True)
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            click.echo()
            return
        except KeyboardInterrupt:  # at the prompt: a fresh line, like a shell
            click.echo()
            continue
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            if _command(session, text) == "quit":
                return
            continue
        _stream_reply(session, session.reply(text))


def _stream_reply(session, pieces) -> None:
    try:
        for piece in pieces:
            click.echo(piece, nl=False)
            sys.stdout.flush()
    except KeyboardInterrupt:
        pieces.close()
        click.echo("\n[reply stopped]", err=True)
        return
    click.echo()


def _command(session, text: str) -> str | None:
    name, _, arg = text.partition(" ")
    arg = arg.strip()
    try:
        if name in ("/quit", "/exit", "/bye"):
            return "quit"
        if name == "/help":
            click.echo(HELP, err=True)
        elif name == "/reset":
            session.reset()
            click.echo("[conversation cleared]", err=True)
        elif name == "/system":
            session.set_system(arg)
            click.echo("[system prompt " + ("set]" if arg else "removed]"), err=True)
        elif name == "/save":
            _need(arg, "/save FILE")
            session.save(Path(arg).expanduser())
            click.echo(f"[saved {len(session.messages)} messages to {arg}]", err=True)
        elif name == "/load":
            _need(arg, "/load FILE")
            _load(session, Path(arg).expanduser())
            click.echo(f"[loaded {len(session.messages)} messages from {arg}]", err=True)
        elif name == "/stats":
            click.echo(_stats_line(session.last), err=True)
        else:
            click.echo(f"Error: unknown command {name}. {HELP}", err=True)
    except (OSError, ValueError, UserError) as e:
        click.echo(f"Error: {e}", err=True)
    return None


def _load(session, path: Path) -> None:
    """/load FILE: what is wrong with the file in one line, naming it (no errno noise)."""
    try:
        session.load_conversation(path)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except (ValueError, AttributeError) as e:
        raise ValueError(f"{path} is not a saved conversation ({e})") from None


def _need(arg: str, usage: str) -> None:
    if not arg:
        raise ValueError(f"usage: {usage}")


def _stats_line(st) -> str:
    if st is None:
        return "[no reply yet]"
    stopped = ", stopped" if st.interrupted else ""
    return (
        f"[last reply: {st.prompt_tokens} new prompt tokens (+{st.reused_tokens} reused from "
        f"the cache) at {st.prompt_tps:.1f} tok/s, first token after {st.ttft_s * 1000:.0f} ms, "
        f"{st.generated_tokens} tokens at {st.generation_tps:.1f} tok/s, "
        f"peak memory {st.peak_memory_bytes / 1e6:.0f} MB{stopped}]"
    )
