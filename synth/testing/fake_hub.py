"""A local stand-in for the Hugging Face Hub's HTTP API: enough for `huggingface_hub` to create a
dataset repo, commit to it (regular and LFS files), list and download it, and for `datasets` to
load it back. For tests only: the real Hub cannot be reached here.

    with FakeHub(token="hf_test") as hub:        # a thread serving on 127.0.0.1
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": "hf_test"}
        ... run `synth ... --push-to-hub org/name` with env ...
        hub.commits("org/name")                  # what was committed, newest last

    python -m synth.testing.fake_hub --port 8765 --token hf_test   # the same as a process

Every write, and every read of a private repo, needs `Authorization: Bearer TOKEN`. Files are kept
in memory as git would: a regular file's oid is its git blob sha1; an LFS file's is the sha1 of its
pointer, with the content addressed by sha256. Endpoints (datasets only):

    POST /api/repos/create                              POST /api/validate-yaml
    GET  /api/datasets/{repo}[/revision/{rev}]          GET  /api/datasets/{repo}/commits/{rev}
    POST /api/datasets/{repo}/preupload/{rev}           POST /api/datasets/{repo}/commit/{rev}  (NDJSON)
    GET  /api/datasets/{repo}/tree/{rev}[/{path}]       POST /api/datasets/{repo}/paths-info/{rev}
    POST /datasets/{repo}.git/info/lfs/objects/batch    PUT  /lfs/{sha256}
    HEAD/GET /datasets/{repo}/resolve/{rev}/{path}
"""

import argparse
import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".parquet", ".arrow", ".png", ".jpg", ".jpeg", ".bin", ".safetensors", ".gz", ".zip", ".npy")
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES).encode()
# What the Hub's metadata validation accepts for a dataset card's categorical fields.
SIZE_CATEGORIES = {
    "n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B", "1B<n<10B",
    "10B<n<100B", "100B<n<1T", "n>1T",
}
TASK_CATEGORIES = {
    "translation", "sentence-similarity", "text-retrieval", "feature-extraction", "text-classification",
    "question-answering", "text-generation", "summarization", "fill-mask", "token-classification",
    "zero-shot-classification", "text-ranking",
}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class StoredFile:
    size: int
    oid: str                  # git blob sha1 (of the content, or of the LFS pointer)
    sha256: str | None        # LFS files only
    content: bytes | None     # regular files only (LFS content lives in the hub's LFS store)

    @property
    def lfs(self) -> bool:
        return self.sha256 is not None


@dataclass
class Commit:
    oid: str
    title: str
    description: str
    parent: str | None
    files: dict[str, StoredFile]
    date: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def at(self, revision: str) -> Commit | None:
        if revision in ("main", "refs/heads/main"):
            return self.head
        return next((c for c in self.commits if c.oid == revision or (len(revision) >= 7 and c.oid.startswith(revision))), None)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class FakeHub:
    """The Hub's state plus an HTTP server thread on 127.0.0.1 (see the module docstring)."""

    def __init__(self, token: str, port: int = 0):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs_store: dict[str, bytes] = {}
        self.unauthorized = 0          # requests refused for a missing or wrong token
        self.validations: list[list[str]] = []  # the errors of each README metadata validation
        self._lock = threading.Lock()
        self._signing_key = secrets.token_bytes(16)
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.request_queue_size = 64
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- what tests look at --------------------------------------------------------------------
    def commits(self, repo_id: str) -> list[Commit]:
        return list(self.repos[repo_id].commits)

    def file_bytes(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        stored = self.repos[repo_id].at(revision).files[path]
        return self.lfs_store[stored.sha256] if stored.lfs else stored.content

    # --- the API -------------------------------------------------------------------------------
    def create_repo(self, body: dict) -> dict:
        if body.get("type") != "dataset":
            raise HubError(400, "this fake Hub holds dataset repos only")
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        with self._lock:
            if repo_id in self.repos:
                raise HubError(409, "You already created this dataset repo", "RepoAlreadyExists", url=f"{self.url}/datasets/{repo_id}")
            repo = Repo(repo_id, private=body.get("visibility", "public") == "private" or bool(body.get("private")))
            initial = {".gitattributes": StoredFile(len(GITATTRIBUTES), git_blob_sha1(GITATTRIBUTES), None, GITATTRIBUTES)}
            repo.commits.append(self._commit(None, "initial commit", "", initial))
            self.repos[repo_id] = repo
        return {"url": f"{self.url}/datasets/{repo_id}", "name": repo_id, "id": repo_id}

    def validate_yaml(self, body: dict) -> tuple[int, dict]:
        errors = card_metadata_errors(body.get("content", ""), body.get("repoType", "model"))
        self.validations.append(errors)
        return (400 if errors else 200), {"errors": [{"message": e} for e in errors], "warnings": []}

    def repo_info(self, repo: Repo, revision: str) -> dict:
        commit = self._commit_at(repo, revision)
        return {
            "id": repo.repo_id, "_id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.oid,
            "private": repo.private, "disabled": False, "gated": False, "downloads": 0, "likes": 0,
            "lastModified": commit.date, "tags": [], "cardData": {},
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }

    def list_commits(self, repo: Repo, revision: str) -> list[dict]:
        commit = self._commit_at(repo, revision)
        chain = repo.commits[: repo.commits.index(commit) + 1]
        return [
            {"id": c.oid, "title": c.title, "message": c.description, "authors": [{"user": "synth-test"}], "date": c.date}
            for c in reversed(chain)
        ]

    def preupload(self, repo: Repo, revision: str, body: dict) -> dict:
        commit = self._commit_at(repo, revision)
        answer = []
        for item in body.get("files", []):
            sample = base64.b64decode(item.get("sample", ""))
            lfs = item["path"].endswith(LFS_SUFFIXES) or item["size"] >= LFS_MIN_SIZE or b"\0" in sample
            existing = commit.files.get(item["path"])
            oid = None
            if existing is not None:
                oid = existing.sha256 if existing.lfs else existing.oid
            answer.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return {"files": answer}

    def lfs_batch(self, body: dict) -> dict:
        if body.get("operation") != "upload":
            raise HubError(400, "only uploads are supported")
        objects = []
        for item in body.get("objects", []):
            entry = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if item["oid"] not in self.lfs_store:
                # Like the Hub's presigned storage URLs: the signature, not the token, grants the PUT.
                href = f"{self.url}/lfs/{item['oid']}?signature={self._signature(item['oid'])}"
                entry["actions"] = {"upload": {"href": href, "header": {}, "expires_in": 3600}}
            objects.append(entry)
        return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def lfs_put(self, sha256: str, signature: str, data: bytes) -> None:
        if not hmac.compare_digest(signature, self._signature(sha256)):
            raise HubError(403, "bad or missing signature")
        if hashlib.sha256(data).hexdigest() != sha256:
            raise HubError(400, "uploaded content does not match its sha256")
        with self._lock:
            self.lfs_store[sha256] = data

    def commit(self, repo: Repo, revision: str, lines: list[dict]) -> dict:
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "a commit starts with its header")
        header = lines[0]["value"]
        with self._lock:
            parent = self._commit_at(repo, revision)
            if header.get("parentCommit") and header["parentCommit"] != parent.oid:
                raise HubError(412, "the parent commit is not the head of the branch")
            files = dict(parent.files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                path = value["path"]
                if key == "file":
                    data = base64.b64decode(value["content"])
                    files[path] = StoredFile(len(data), git_blob_sha1(data), None, data)
                elif key == "lfsFile":
                    sha256 = value["oid"]
                    if sha256 not in self.lfs_store:
                        raise HubError(422, f"LFS object {sha256} of {path} was never uploaded")
                    files[path] = StoredFile(value["size"], git_blob_sha1(lfs_pointer(sha256, value["size"])), sha256, None)
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    for name in [n for n in files if n.startswith(prefix)]:
                        del files[name]
                else:
                    raise HubError(400, f"unsupported commit operation {key!r}")
            commit = self._commit(parent.oid, header.get("summary", ""), header.get("description", ""), files)
            repo.commits.append(commit)
        return {
            "success": True, "commitOid": commit.oid, "commitMessage": commit.title,
            "commitUrl": f"{self.url}/datasets/{repo.repo_id}/commit/{commit.oid}", "pullRequestUrl": None,
        }

    def tree(self, repo: Repo, revision: str, path: str, recursive: bool) -> list[dict]:
        commit = self._commit_at(repo, revision)
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        if prefix and prefix.rstrip("/") in commit.files:
            return [self._entry(prefix.rstrip("/"), commit.files[prefix.rstrip("/")])]
        entries, folders = [], set()
        for name in sorted(commit.files):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                folder = prefix + "/".join(parts[:depth])
                if (recursive or depth == 1) and folder not in folders:
                    folders.add(folder)
                    entries.append({"type": "directory", "path": folder, "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0})
            if recursive or len(parts) == 1:
                entries.append(self._entry(name, commit.files[name]))
        if prefix and not entries:
            raise HubError(404, f"{path} does not exist at {revision}", "EntryNotFound")
        return entries

    def paths_info(self, repo: Repo, revision: str, paths: list[str]) -> list[dict]:
        commit = self._commit_at(repo, revision)
        found = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                found.append(self._entry(path, commit.files[path]))
            elif any(name.startswith(path + "/") for name in commit.files):
                found.append({"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0})
        return found

    def resolve(self, repo: Repo, revision: str, path: str) -> tuple[bytes, dict]:
        commit = self._commit_at(repo, revision)
        stored = commit.files.get(path)
        if stored is None:
            raise HubError(404, f"{path} does not exist at {revision}", "EntryNotFound")
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{stored.oid}"'}
        if stored.lfs:
            headers.update({"X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": str(stored.size)})
            return self.lfs_store[stored.sha256], headers
        return stored.content, headers

    # --- helpers -------------------------------------------------------------------------------
    def _signature(self, sha256: str) -> str:
        return hmac.new(self._signing_key, sha256.encode(), hashlib.sha256).hexdigest()

    def _commit(self, parent: str | None, title: str, description: str, files: dict[str, StoredFile]) -> Commit:
        return Commit(secrets.token_hex(20), title, description, parent, files, datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))

    def _commit_at(self, repo: Repo, revision: str) -> Commit:
        commit = repo.at(unquote(revision))
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    @staticmethod
    def _entry(path: str, stored: StoredFile) -> dict:
        entry = {"type": "file", "path": path, "size": stored.size, "oid": stored.oid}
        if stored.lfs:
            entry["lfs"] = {"oid": stored.sha256, "size": stored.size, "pointerSize": len(lfs_pointer(stored.sha256, stored.size))}
        return entry


def card_metadata_errors(content: str, repo_type: str) -> list[str]:
    """What the Hub's metadata validation would refuse in a README.md's YAML block."""
    match = re.match(r"^---\n(.*?)\n---\n", content, re.DOTALL)
    if not match:
        return []
    try:
        data = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as error:
        return [f"invalid YAML: {error}"]
    if not isinstance(data, dict):
        return ["the metadata must be a mapping"]
    errors = []
    for key in ("language", "tags", "task_categories", "size_categories"):
        if key in data and not (isinstance(data[key], list) and all(isinstance(v, str) for v in data[key])):
            errors.append(f"{key} must be a list of strings")
    if repo_type == "dataset":
        for value in data.get("size_categories") or []:
            if value not in SIZE_CATEGORIES:
                errors.append(f"size_categories: unknown value {value!r}")
        for value in data.get("task_categories") or []:
            if value not in TASK_CATEGORIES:
                errors.append(f"task_categories: unknown value {value!r}")
        for language in data.get("language") or []:
            if not re.fullmatch(r"[a-z]{2,3}(-[A-Za-z0-9]+)*", str(language)):
                errors.append(f"language: {language!r} is not an ISO 639-1/3 code")
        if "license" in data and not isinstance(data["license"], str | list):
            errors.append("license must be a string")
        names = set()
        for config in data.get("configs") or []:
            name = config.get("config_name") if isinstance(config, dict) else None
            if not name:
                errors.append("every config needs a config_name")
                continue
            if name in names:
                errors.append(f"config {name!r} is declared twice")
            names.add(name)
            files = config.get("data_files")
            if not isinstance(files, list | str) or (isinstance(files, list) and not all(
                isinstance(f, dict) and f.get("split") and f.get("path") for f in files
            )):
                errors.append(f"config {name!r}: data_files must list {{split, path}} entries")
    return errors


_REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
_ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate"),
    ("GET", re.compile(rf"^/api/datasets/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"), "info"),
    ("GET", re.compile(rf"^/api/datasets/{_REPO}/commits/(?P<rev>[^/]+)$"), "commits"),
    ("POST", re.compile(rf"^/api/datasets/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/datasets/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("GET", re.compile(rf"^/api/datasets/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"), "tree"),
    ("POST", re.compile(rf"^/api/datasets/{_REPO}/paths-info/(?P<rev>[^/]+)$"), "paths_info"),
    ("POST", re.compile(rf"^/datasets/{_REPO}\.git/info/lfs/objects/batch$"), "lfs_batch"),
    ("PUT", re.compile(r"^/lfs/(?P<oid>[0-9a-f]{64})$"), "lfs_put"),
    ("GET", re.compile(rf"^/datasets/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
]
# Routes anyone may call on a public repo (an LFS PUT carries a signature instead); the rest need the token.
_PUBLIC_READS = {"info", "commits", "tree", "paths_info", "resolve", "validate", "lfs_put"}


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: tests read their own output
            pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_HEAD(self) -> None:
            self._serve("HEAD")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            self._head = method == "HEAD"  # a HEAD answer has headers only, errors included
            body = self._body() if method in ("POST", "PUT") else b""
            try:
                for route_method, pattern, name in _ROUTES:
                    match = pattern.match(url.path)
                    if match and (route_method == method or (route_method == "GET" and method == "HEAD")):
                        self._dispatch(name, match.groupdict(), parse_qs(url.query), body, method)
                        return
                raise HubError(404, f"no route for {method} {url.path}")
            except HubError as error:
                payload = {"error": error.message, **error.extra}
                self._send(error.status, payload, headers={"X-Error-Code": error.code} if error.code else {})

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()  # the blank line after the last chunk
            return b"".join(chunks)

        def _authorized(self) -> bool:
            return self.headers.get("Authorization") == f"Bearer {hub.token}"

        def _repo(self, repo_id: str) -> Repo:
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and not self._authorized()):
                raise HubError(404, "Repository not found", "RepoNotFound")
            return repo

        def _dispatch(self, name: str, args: dict, query: dict, body: bytes, method: str) -> None:
            if name not in _PUBLIC_READS and not self._authorized():
                hub.unauthorized += 1
                raise HubError(401, "Invalid credentials in Authorization header")
            rev = args.get("rev") or "main"
            if name == "create":
                self._send(200, hub.create_repo(json.loads(body)))
            elif name == "validate":
                status, answer = hub.validate_yaml(json.loads(body))
                self._send(status, answer)
            elif name == "info":
                self._send(200, hub.repo_info(self._repo(args["repo"]), rev))
            elif name == "commits":
                self._send(200, hub.list_commits(self._repo(args["repo"]), rev))
            elif name == "preupload":
                self._send(200, hub.preupload(self._repo(args["repo"]), rev, json.loads(body)))
            elif name == "commit":
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                self._send(200, hub.commit(self._repo(args["repo"]), rev, lines))
            elif name == "tree":
                recursive = (query.get("recursive") or ["false"])[0].lower() == "true"
                entries = hub.tree(self._repo(args["repo"]), rev, unquote(args.get("path") or ""), recursive)
                self._send(200, entries)
            elif name == "paths_info":
                form = parse_qs(body.decode()) if body else {}
                self._send(200, hub.paths_info(self._repo(args["repo"]), rev, form.get("paths", [])))
            elif name == "lfs_batch":
                self._repo(args["repo"])
                self._send(200, hub.lfs_batch(json.loads(body)), content_type="application/vnd.git-lfs+json")
            elif name == "lfs_put":
                hub.lfs_put(args["oid"], (query.get("signature") or [""])[0], body)
                self._send(200, {})
            elif name == "resolve":
                data, headers = hub.resolve(self._repo(args["repo"]), rev, unquote(args["path"]))
                self._send_bytes(200, data, "application/octet-stream", headers)

        def _send(self, status: int, payload, headers: dict | None = None, content_type: str = "application/json") -> None:
            self._send_bytes(status, json.dumps(payload).encode(), content_type, headers or {})

        def _send_bytes(self, status: int, data: bytes, content_type: str, headers: dict) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if not self._head:
                self.wfile.write(data)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m synth.testing.fake_hub", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--token", required=True, help="the token every write must carry")
    args = parser.parse_args()
    hub = FakeHub(args.token, args.port)
    print(hub.url, flush=True)
    try:
        hub._server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
