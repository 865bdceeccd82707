"""The code's imports follow the allowed arrows of docs/architecture.md's room table."""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mlxd"
DOC = ROOT / "docs" / "architecture.md"


@dataclass
class Room:
    allowed: set[str] = field(default_factory=set)
    only_in: dict[str, set[str]] = field(default_factory=dict)  # room -> files that may
    stdlib_only: bool = False


def parse_rooms(text: str) -> dict[str, Room]:
    """room name -> what it may import, from the table's "imports (mlxd rooms)" column."""
    lines = text.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("| room |"))
    headers = [c.strip() for c in lines[head].strip("|").split("|")]
    imports_col = headers.index("imports (mlxd rooms)")
    other_col = headers.index("other libraries")
    rooms: dict[str, Room] = {}
    for line in lines[head + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        room = Room(stdlib_only=cells[other_col] == "stdlib only")
        for m in re.finditer(r"`(\w+)`(\s*\(only in ([^)]*)\))?", cells[imports_col]):
            room.allowed.add(m.group(1))
            if m.group(3):
                room.only_in[m.group(1)] = set(re.findall(r"`([\w./]+)`", m.group(3)))
        names = re.findall(r"`mlxd/(\w+)(?:\.py|/)`", cells[0])
        assert names, f"a row of the room table names no mlxd/ path: {line}"
        for name in names:
            rooms[name] = room
    return rooms


def room_of_module(module: str) -> str | None:
    """The room of an absolute module name: its first part under mlxd; a dunder name from
    mlxd/__init__.py (`from mlxd import __version__`) is the room `__init__`."""
    parts = module.split(".")
    if parts[0] != "mlxd":
        return None
    if len(parts) == 1 or (parts[1].startswith("__") and parts[1] != "__main__"):
        return "__init__"
    return parts[1]


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in a file, at any depth (functions too)."""
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: from its own package, or one above per extra dot
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            if module == "mlxd":  # `from mlxd import hub` imports the room hub
                found += [(node.lineno, f"mlxd.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, module))
    return found


def room_of_file(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def arrows_not_allowed(rooms: dict[str, Room]) -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(ROOT)
        room_name = room_of_file(path)
        room = rooms.get(room_name)
        if room is None:
            bad.append(f"{where}: room '{room_name}' has no row in docs/architecture.md")
            continue
        for line, module in imports_of(path):
            target = room_of_module(module)
            if target is None:
                top = module.split(".")[0]
                if room.stdlib_only and top not in sys.stdlib_module_names and top != "__future__":
                    bad.append(f"{where}:{line}: {room_name} imports {module} (stdlib only)")
                continue
            if target == room_name:
                continue
            files = room.only_in.get(target)
            if target not in room.allowed or (files is not None and path.name not in files):
                bad.append(f"{where}:{line}: {room_name} -> {target} ({module}) is not allowed")
    return bad


def test_every_import_follows_an_allowed_arrow():
    bad = arrows_not_allowed(parse_rooms(DOC.read_text()))
    assert not bad, "imports the room table of docs/architecture.md does not allow:\n" + "\n".join(
        bad
    )


def test_the_check_names_each_arrow_it_does_not_allow(tmp_path, monkeypatch):
    """Against a small tree: an upward import inside a function (catalog -> jobs), an arrow
    used outside the files it is limited to (daemon -> engine), a third-party import in the
    stdlib-only room and a room without a row are each named; allowed ones are not."""
    rooms = parse_rooms(DOC.read_text())
    files = {
        "catalog/read.py": "from mlxd.vocab import fmt\n\n\ndef f():\n    from mlxd.jobs import base\n",
        "jobs/__init__.py": "from mlxd import catalog, hub\n",
        "daemon/child.py": "import mlxd.engine.backend\n",
        "daemon/runner.py": "import os\nfrom mlxd.engine import backend\n",
        "engine/bench.py": "from .backend import facts\nfrom ..vocab import fmt\nfrom ..jobs import x\n",
        "vocab/fmt.py": "import json\nimport numpy\n",
        "newroom.py": "",
    }
    for name, text in files.items():
        (tmp_path / "mlxd" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "mlxd" / name).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "mlxd")
    assert arrows_not_allowed(rooms) == [
        "mlxd/catalog/read.py:5: catalog -> jobs (mlxd.jobs) is not allowed",
        "mlxd/daemon/runner.py:2: daemon -> engine (mlxd.engine) is not allowed",
        "mlxd/engine/bench.py:3: engine -> jobs (mlxd.jobs) is not allowed",
        "mlxd/newroom.py: room 'newroom' has no row in docs/architecture.md",
        "mlxd/vocab/fmt.py:2: vocab imports numpy (stdlib only)",
    ]
