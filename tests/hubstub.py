"""A stand-in for the Hugging Face hub: a small HTTP server on 127.0.0.1.

It speaks the endpoints ``huggingface_hub`` uses to download (``snapshot_download``,
``hf_hub_download``, ``model_info``, ``list_repo_tree``) and to upload (``create_repo``,
``upload_folder`` without Xet: preupload, the LFS batch API, a basic PUT, the commit call).
Point ``HF_ENDPOINT`` at ``hub.url`` (and set ``HF_HUB_DISABLE_XET=1`` to upload).

What tests need from it besides serving: it counts requests and the bytes it served per
file, and it can cut a file midway, corrupt a byte of it, slow it down, or mark a repo
gated (only a request with an allowed token gets its files).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".npz", ".pt", ".pth", ".h5", ".msgpack")
LFS_MIN_BYTES = 10 * 1024 * 1024  # larger files are LFS whatever their name


_HASHES: dict[int, tuple[bytes, str, str]] = {}  # id(data) -> (data, git sha1, sha256)
_HASHES_LOCK = threading.Lock()


def _hashes(data: bytes) -> tuple[str, str]:
    # A real hub knows its hashes; computing them per request would cost the stand-in
    # (and the machine it shares with the client) a full read of every file.
    with _HASHES_LOCK:
        hit = _HASHES.get(id(data))
        if hit is not None and hit[0] is data:
            return hit[1], hit[2]
    git = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    sha = hashlib.sha256(data).hexdigest()
    with _HASHES_LOCK:
        _HASHES[id(data)] = (data, git, sha)
    return git, sha


def git_blob_sha1(data: bytes) -> str:
    return _hashes(data)[0]


def sha256_of(data: bytes) -> str:
    return _hashes(data)[1]


def is_lfs(path: str, data: bytes) -> bool:
    return path.endswith(LFS_SUFFIXES) or len(data) >= LFS_MIN_BYTES


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]
    message: str = ""


@dataclass
class Repo:
    repo_id: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    gated: bool = False
    private: bool = False

    def add_commit(self, files: dict[str, bytes], branch: str = "main", message: str = "") -> str:
        parent = self.branches.get(branch, "")
        digest = hashlib.sha1(parent.encode() + message.encode())
        for path in sorted(files):
            digest.update(path.encode() + bytes.fromhex(sha256_of(files[path])))
        sha = digest.hexdigest()
        self.commits[sha] = Commit(sha, dict(files), message)
        self.branches[branch] = sha
        return sha

    def resolve(self, revision: str) -> Commit | None:
        revision = urllib.parse.unquote(revision)
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        return self.commits.get(revision)


@dataclass
class Fault:
    cut_at: int | None = None  # close the connection after this many bytes of the body
    cut_times: int = 0
    corrupt_times: int = 0  # serve a flipped byte in the middle this many times
    bytes_per_s: float | None = None  # throttle


class Hub:
    """The stand-in hub. ``with Hub() as hub:`` starts it on a free port and stops it."""

    def __init__(self, allowed_token: str = "hf_stub_allowed_token"):
        self.repos: dict[str, Repo] = {}
        self.allowed_token = allowed_token
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.gets: Counter = Counter()  # (repo_id, filename) -> GET count
        self.bytes_served: Counter = Counter()  # (repo_id, filename) -> body bytes sent
        self.auth_headers: list[str] = []  # every Authorization header seen
        self.faults: dict[tuple[str, str], Fault] = {}
        self.lfs_uploads: dict[str, bytes] = {}  # sha256 -> bytes PUT by clients
        self.validated_cards: list = []  # YAML headers of model cards checked before commits
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- repos --------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes] | None = None,
        *,
        folder: Path | None = None,
        gated: bool = False,
        branch: str = "main",
    ) -> Repo:
        """A repo whose first commit holds ``files`` and/or every file under ``folder``."""
        contents = dict(files or {})
        if folder is not None:
            contents.update(folder_files(folder))
        repo = self.repos.get(repo_id) or Repo(repo_id, gated=gated)
        self.repos[repo_id] = repo
        if contents:
            repo.add_commit(contents, branch=branch, message="initial")
        return repo

    def cut(self, repo_id: str, filename: str, at: int, times: int = 1) -> None:
        self.faults.setdefault((repo_id, filename), Fault()).cut_at = at
        self.faults[(repo_id, filename)].cut_times = times

    def corrupt(self, repo_id: str, filename: str, times: int = 1) -> None:
        self.faults.setdefault((repo_id, filename), Fault()).corrupt_times = times

    def throttle(self, repo_id: str, filename: str, bytes_per_s: float | None) -> None:
        self.faults.setdefault((repo_id, filename), Fault()).bytes_per_s = bytes_per_s

    def count(self, method: str, pattern: str = "") -> int:
        with self._lock:
            return sum(1 for m, p, _ in self.requests if m == method and pattern in p)

    # -- server -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Hub:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Hub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests.append((method, path, status))


def folder_files(folder: Path) -> dict[str, bytes]:
    folder = Path(folder)
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/?]+))?$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_PREUPLOAD = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)$")
_COMMIT = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)$")
_LFS_BATCH = re.compile(r"^/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$")
_BRANCH = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/branch/(?P<branch>[^/]+)$")
_LFS_PUT = re.compile(r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$")


class _Handler(BaseHTTPRequestHandler):
    hub: Hub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    # -- plumbing -----------------------------------------------------------------------

    def _path(self) -> tuple[str, dict[str, list[str]]]:
        parts = urllib.parse.urlsplit(self.path)
        return parts.path, urllib.parse.parse_qs(parts.query)

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.hub._record(self.command, self._path()[0], status)

    def _json(self, status: int, value, headers: dict | None = None) -> None:
        body = json.dumps(value).encode()
        self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        h = {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})}
        self._json(status, {"error": message}, h)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.hub.repos.get(urllib.parse.unquote(repo_id))
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
        return repo

    def _commit(self, repo: Repo, rev: str) -> Commit | None:
        commit = repo.resolve(rev)
        if commit is None:
            self._error(404, "RevisionNotFound", "Invalid rev id: " + urllib.parse.unquote(rev))
        return commit

    def _authorized(self, repo: Repo) -> bool:
        auth = self.headers.get("Authorization")
        if auth:
            self.hub.auth_headers.append(auth)
        return not repo.gated or auth == f"Bearer {self.hub.allowed_token}"

    # -- verbs --------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        path, query = self._path()
        if self.headers.get("Authorization"):
            self.hub.auth_headers.append(self.headers["Authorization"])
        routes = [
            ("GET", _TREE, self._tree),
            ("GET", _INFO, self._info),
            ("GET", _RESOLVE, self._resolve),
            ("HEAD", _RESOLVE, self._resolve),
            ("POST", _PREUPLOAD, self._preupload),
            ("POST", _COMMIT, self._commit_files),
            ("POST", _LFS_BATCH, self._lfs_batch),
            ("PUT", _LFS_PUT, self._lfs_put),
            ("POST", _BRANCH, self._create_branch),
        ]
        if self.command == "POST" and path == "/api/repos/create":
            return self._create_repo()
        if self.command == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml()
        for method, pattern, handler in routes:
            m = pattern.match(path)
            if m and method == self.command:
                return handler(query=query, **m.groupdict())
        self._body()
        self._error(404, "NotFound", f"stand-in hub: no route for {self.command} {path}")

    # -- download side ------------------------------------------------------------------

    def _info(self, repo: str, rev: str | None, query) -> None:
        r = self._repo(repo)
        if r is None:
            return
        commit = self._commit(r, rev or "main")
        if commit is None:
            return
        self._json(
            200,
            {
                "_id": hashlib.md5(r.repo_id.encode()).hexdigest()[:24],
                "id": r.repo_id,
                "modelId": r.repo_id,
                "author": r.repo_id.split("/")[0],
                "sha": commit.sha,
                "private": r.private,
                "gated": "manual" if r.gated else False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": ["safetensors"],
                "siblings": [{"rfilename": p} for p in sorted(commit.files)],
                "lastModified": "2026-12-01T00:00:00.000Z",
                "createdAt": "2026-12-01T00:00:00.000Z",
            },
        )

    def _tree(self, repo: str, rev: str, sub: str | None, query) -> None:
        r = self._repo(repo)
        if r is None:
            return
        commit = self._commit(r, rev)
        if commit is None:
            return
        prefix = (urllib.parse.unquote(sub).strip("/") + "/") if sub else ""
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries, dirs = [], set()
        for path in sorted(commit.files):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :]
            if "/" in rest:
                top = prefix + rest.split("/")[0]
                if top not in dirs:
                    dirs.add(top)
                    entries.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": top})
                if not recursive:
                    continue
            data = commit.files[path]
            entry = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
            if is_lfs(path, data):
                sha = sha256_of(data)
                entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
            entries.append(entry)
        self._json(200, entries)

    def _resolve(self, repo: str, rev: str, file: str, query) -> None:
        r = self._repo(repo)
        if r is None:
            return
        commit = self._commit(r, rev)
        if commit is None:
            return
        filename = urllib.parse.unquote(file)
        headers = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes"}
        if not self._authorized(r):
            self._error(403, "GatedRepo", "Access to this model is restricted", headers)
            return
        data = commit.files.get(filename)
        if data is None:
            self._error(404, "EntryNotFound", "Entry not found", headers)
            return
        if is_lfs(filename, data):
            headers["X-Linked-Etag"] = f'"{sha256_of(data)}"'
            headers["X-Linked-Size"] = len(data)
            headers["ETag"] = f'"{sha256_of(data)}"'
        else:
            headers["ETag"] = f'"{git_blob_sha1(data)}"'
        if self.command == "HEAD":
            # The size of a regular file comes from Content-Length (LFS: X-Linked-Size).
            self.send_response(200)
            for k, v in {**headers, "Content-Length": len(data)}.items():
                self.send_header(k, str(v))
            self.end_headers()
            self.hub._record("HEAD", self._path()[0], 200)
            return
        self._serve_file(r.repo_id, filename, data, headers)

    def _serve_file(self, repo_id: str, filename: str, data: bytes, headers: dict) -> None:
        key = (repo_id, filename)
        hub = self.hub
        with hub._lock:
            hub.gets[key] += 1
            fault = hub.faults.get(key)
            corrupt = bool(fault and fault.corrupt_times > 0)
            if corrupt:
                fault.corrupt_times -= 1
            cut_at = None
            if fault and fault.cut_at is not None and fault.cut_times > 0:
                fault.cut_times -= 1
                cut_at = fault.cut_at
            rate = fault.bytes_per_s if fault else None
        if corrupt:
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]
        start, end = 0, len(data)
        status = 200
        rng = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if rng:
            start = int(rng.group(1))
            end = int(rng.group(2)) + 1 if rng.group(2) else len(data)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        body = memoryview(data)[start:end]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        hub._record("GET", self._path()[0], status)
        sent = 0
        chunk = 64 * 1024
        try:
            while sent < len(body):
                if cut_at is not None and start + sent >= cut_at:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                n = min(chunk, len(body) - sent)
                if cut_at is not None:
                    n = min(n, max(cut_at - start - sent, 1))
                self.wfile.write(body[sent : sent + n])
                sent += n
                with hub._lock:
                    hub.bytes_served[key] += n
                if rate:
                    time.sleep(n / rate)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    # -- upload side --------------------------------------------------------------------

    def _create_repo(self) -> None:
        req = json.loads(self._body() or b"{}")
        repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
        if "/" not in repo_id:
            repo_id = f"stub-user/{repo_id}"
        if repo_id in self.hub.repos:
            self._error(
                409,
                "RepoExists",
                "You already created this model repo",
            )
            return
        repo = Repo(repo_id, private=bool(req.get("private")))
        repo.add_commit({".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"})
        self.hub.repos[repo_id] = repo
        self._json(200, {"url": f"{self.hub.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def _validate_yaml(self) -> None:
        """The hub checks a README's YAML header before a commit that adds one."""
        import yaml

        req = json.loads(self._body() or b"{}")
        front = re.match(r"^---\n(.*?)\n---\n", req.get("content", ""), re.S)
        try:
            meta = yaml.safe_load(front.group(1)) if front else None
        except yaml.YAMLError as e:
            self._json(400, {"errors": [{"message": str(e)}], "warnings": []})
            return
        self.hub.validated_cards.append(meta)
        self._json(200, {"errors": [], "warnings": []})

    def _create_branch(self, repo: str, branch: str, query) -> None:
        self._body()
        r = self._repo(repo)
        if r is None:
            return
        branch = urllib.parse.unquote(branch)
        if branch in r.branches:
            self._error(409, "BranchExists", "Reference already exists")
            return
        r.branches[branch] = r.branches["main"]
        self._json(200, {})

    def _preupload(self, repo: str, rev: str, query) -> None:
        req = json.loads(self._body() or b"{}")
        if self._repo(repo) is None:
            return
        files = []
        for f in req.get("files", []):
            sample = base64.b64decode(f.get("sample", ""))
            lfs = f["path"].endswith(LFS_SUFFIXES) or f.get("size", len(sample)) >= LFS_MIN_BYTES
            files.append(
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": None,
                }
            )
        self._json(200, {"files": files, "commitOid": None})

    def _lfs_batch(self, repo: str, query) -> None:
        req = json.loads(self._body() or b"{}")
        if self._repo(repo) is None:
            return
        objects = []
        for o in req.get("objects", []):
            entry = {"oid": o["oid"], "size": o["size"], "authenticated": True}
            if o["oid"] not in self.hub.lfs_uploads:
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.url}/lfs-upload/{o['oid']}", "header": {}}
                }
            objects.append(entry)
        self._json(
            200,
            {"transfer": "basic", "objects": objects},
            {"Content-Type": "application/vnd.git-lfs+json"},
        )

    def _lfs_put(self, oid: str, query) -> None:
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            self._error(400, "BadOid", "content does not match its oid")
            return
        self.hub.lfs_uploads[oid] = data
        self._send(200)

    def _commit_files(self, repo: str, rev: str, query) -> None:
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        r = self._repo(repo)
        if r is None:
            return
        branch = urllib.parse.unquote(rev)
        base = r.resolve(branch) or r.resolve("main")
        files = dict(base.files) if base else {}
        summary = ""
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "header":
                summary = value.get("summary", "")
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                data = self.hub.lfs_uploads.get(value["oid"])
                if data is None:
                    self._error(400, "MissingLfs", f"LFS object {value['oid']} was not uploaded")
                    return
                files[value["path"]] = data
            elif key in ("deletedFile", "deletedFolder"):
                files = {
                    p: d
                    for p, d in files.items()
                    if p != value["path"] and not p.startswith(value["path"].rstrip("/") + "/")
                }
        sha = r.add_commit(files, branch=branch, message=summary)
        self._json(
            200,
            {
                "commitUrl": f"{self.hub.url}/{r.repo_id}/commit/{sha}",
                "commitOid": sha,
                "pullRequestUrl": None,
                "success": True,
            },
        )
