"""The child/supervisor protocol (``mlxd/jobs/protocol.py``): every event a child can send
is a named Event, and the supervisor knows each one (no daemon, no MLX)."""

from __future__ import annotations

import ast
import io
import logging
from pathlib import Path
from types import SimpleNamespace

import mlxd
from mlxd.daemon import runner as runner_mod
from mlxd.jobs.protocol import KIND_EVENTS, RUNNER_EVENTS, Event

PACKAGE = Path(mlxd.__file__).parent
# Where events are sent: the child process and the job kinds it runs.
SENDERS = [PACKAGE / "daemon" / "child.py", *sorted((PACKAGE / "jobs").glob("*.py"))]


def _sent_events() -> list[tuple[str, ast.expr]]:
    """(file:line, first argument) of every send(...) and ....emit(...) call, except the
    child's lambda that forwards what a kind emits (``RunContext.emit``) to ``send``."""
    calls = []
    for path in SENDERS:
        tree = ast.parse(path.read_text())
        forwarded = {
            id(lam.body)
            for lam in ast.walk(tree)
            if isinstance(lam, ast.Lambda)
            and isinstance(lam.body, ast.Call)
            and lam.body.args
            and isinstance(lam.body.args[0], ast.Name)
            and lam.body.args[0].id in {a.arg for a in lam.args.args}
        }
        for node in ast.walk(tree):
            if id(node) in forwarded:
                continue
            if not isinstance(node, ast.Call) or not node.args:
                continue
            fn = node.func
            name = fn.id if isinstance(fn, ast.Name) else getattr(fn, "attr", None)
            if name in ("send", "emit"):
                calls.append((f"{path.name}:{node.lineno}", node.args[0]))
    return calls


def test_every_event_a_child_sends_is_a_protocol_event():
    calls = _sent_events()
    sent = set()
    for where, arg in calls:
        assert (
            isinstance(arg, ast.Attribute)
            and isinstance(arg.value, ast.Name)
            and arg.value.id == "Event"
        ), f"{where}: an event is sent as {ast.unparse(arg)}, not as a protocol Event"
        assert arg.attr in Event.__members__, f"{where}: Event.{arg.attr} is not in the protocol"
        sent.add(Event[arg.attr])
    # The scan sees the child's own events and a kind's: it cannot pass by finding nothing.
    assert {Event.BEAT, Event.PROGRESS, Event.RESULT, Event.ERROR, Event.TIMING} <= sent
    assert Event.FINETUNE_REPORT in sent


def test_every_kind_event_has_an_on_event_that_reads_it():
    handled = set()
    for path in sorted((PACKAGE / "jobs").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == "on_event":
                handled |= {
                    Event[n.attr]
                    for n in ast.walk(node)
                    if isinstance(n, ast.Attribute)
                    and isinstance(n.value, ast.Name)
                    and n.value.id == "Event"
                }
    assert KIND_EVENTS <= handled, f"no on_event reads {sorted(KIND_EVENTS - handled)}"


def test_the_supervisor_knows_every_event(tmp_path, caplog):
    from mlxd.config import Paths

    # Following events touches no catalog: the store is never asked.
    runner = runner_mod.Runner(store=None, paths=Paths(tmp_path))
    to_kind = []
    runner._kind_event = lambda job, ev: to_kind.append(ev["event"])
    fields = {
        Event.BEAT: {},
        Event.PROGRESS: {"fraction": 0.5, "message": "half"},
        Event.RESULT: {"result": {"ok": 1}},
        Event.ERROR: {"message": "ValueError: bad"},
        Event.TIMING: {"imports_s": 1.0, "idle_s": 0.0, "work_s": 2.0, "spare": False},
    }
    log = io.StringIO()
    log.name = str(tmp_path / "job.log")
    f = runner_mod._Following(
        proc=SimpleNamespace(pid=1),
        joblog=log,
        ident={},
        output_path=None,
        disk_path=None,
        reserve=0,
        memory_limit=None,
        lease_s=60,
        beat_s=5,
        limit_s=60,
        ps=None,
    )
    job = SimpleNamespace(id=1, kind="finetune")
    with caplog.at_level(logging.WARNING, logger="mlxd.runner"):
        for event in Event:
            runner._on_event(job, f, {"event": event.value, **fields.get(event, {})})
        assert not caplog.records  # no event of the protocol is unknown to the supervisor
        runner._on_event(job, f, {"event": "no-such-event"})
        assert "unknown event 'no-such-event'" in caplog.text
    assert set(fields) == RUNNER_EVENTS
    assert to_kind == [e.value for e in Event if e in KIND_EVENTS]
    assert f.pending_progress == {"progress": 0.5, "message": "half"}
    assert f.end.result == {"ok": 1}
    assert f.end.error.reason == "ValueError: bad"
    assert "imports 1.000 s, idle 0.000 s, work 2.000 s" in log.getvalue()
