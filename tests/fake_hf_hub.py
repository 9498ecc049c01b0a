"""A local stand-in for the Hugging Face Hub (huggingface.co). For tests only.

It lets tests drive the real ``huggingface_hub`` client (checked against 0.36.2, on requests, and 2.4.0, on
httpx2) with no internet, through ``HF_ENDPOINT=http://127.0.0.1:PORT``. Folders registered with
``add_repo`` are served as model repos, through the routes downloads use:

  GET /api/models/REPO[/revision/REV]      model_info / repo_info (sha, siblings, ...)
  GET /api/models/REPO/tree/REV[/PATH]     list_repo_tree (?recursive=; one page), which 2.x's
                                           snapshot_download lists files with (0.x reads the siblings)
  HEAD|GET /REPO/resolve/REV/PATH          200: ETag (git blob sha1), X-Repo-Commit, the bytes. An LFS file
                                           (LFS_SUFFIXES): 302 to the "CDN", X-Linked-Etag (sha256),
                                           X-Linked-Size, X-Repo-Commit
  HEAD|GET CDN/cdn/SHA256/PATH             LFS bytes, no auth (a signed URL). A second port, i.e. another
                                           origin: the client stops at the 302 and drops Authorization
REV: a branch name given to ``add_repo`` or a full commit sha. ``Range: bytes=A-|A-B|-N``: 206 with
Content-Range (416 if unsatisfiable). No Xet headers are ever sent, so hf_xet is never used. Errors carry
the X-Error-Code that ``hf_raise_for_status`` maps: unknown repo, or private repo without its token, 401
``RepoNotFound`` (404 if a valid token came) -> RepositoryNotFoundError; unknown revision 404
``RevisionNotFound``; unknown file 404 ``EntryNotFound`` (with X-Repo-Commit). A token this hub does not
know: 401 "Invalid credentials in Authorization header" (a plain HfHubHTTPError), as the real hub.

Pointing the client here: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE once, at import (and
tests/conftest.py sets HF_HUB_OFFLINE=1). A child process needs ``env={**os.environ, **hub.env()}``; this
process ``hub.patch_client(monkeypatch)``, which also patches what was copied at import (constants,
0.x's file_download.HUGGINGFACE_CO_URL_TEMPLATE, the HfApi behind ``huggingface_hub.model_info`` & co,
transformers 4.x's offline flag: import transformers first), unsets HF_TOKEN and hides the token file
(this hub answers a stray token with 401): pass ``token=``, or setenv HF_TOKEN after it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import threading
from collections import namedtuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from fake_hub_http import git_blob_sha1, send

# The hub's default .gitattributes sends these to LFS (and any file over 10 MiB).
LFS_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".gguf", ".npz"}
DATE = "2024-06-01T08:00:00.000Z"
LOGGED_HEADERS = ("authorization", "range")
LFS_SPEC = "https://git-lfs.github.com/spec/v1"

_File = namedtuple("_File", "data oid sha256 pointer")  # oid: git blob sha1 (of the pointer if LFS)
_Revision = namedtuple("_Revision", "sha files")  # files: {path in the repo: _File}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    timeout = 60

    def setup(self):
        super().setup()
        with self.server.hub._lock:
            self.server.hub._conns.add(self.connection)

    def finish(self):
        with self.server.hub._lock:
            self.server.hub._conns.discard(self.connection)
        super().finish()

    def do_GET(self):
        try:
            self.server.hub._serve(self)
        except (BrokenPipeError, ConnectionResetError):  # the client went away
            self.close_connection = True

    do_HEAD = do_GET

    def log_message(self, format, *args):  # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


class FakeHFHub:
    """A Hugging Face Hub on 127.0.0.1 serving folders as model repos (see the module docstring)."""

    def __init__(self):
        self.url = ""  # the endpoint (HF_ENDPOINT), valid after start()
        self.cdn_url = ""  # where LFS files are redirected to
        self.requests: list[tuple[str, str, dict]] = []  # (method, path?query, LOGGED_HEADERS present)
        self._repos: dict[str, dict[str, _Revision]] = {}
        self._tokens: dict[str, str] = {}  # private repos
        self._blobs: dict[str, bytes] = {}  # sha256 -> LFS bytes, for the CDN
        self._fail: dict[str, int] = {}
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._servers: list[_Server] = []

    # -- set-up -------------------------------------------------------------------------------------
    def add_repo(
        self, repo_id: str, folder: Path | str, *, token: str | None = None, revision: str = "main"
    ) -> str:
        """Serve every file under ``folder`` as model repo ``repo_id`` at ``revision``; return its commit sha
        (deterministic). With ``token`` the repo is private. Call again for more revisions."""
        root, files = Path(folder), {}
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            sha256 = pointer = None
            if path.suffix in LFS_SUFFIXES or len(data) > 10 * 2**20:
                sha256 = hashlib.sha256(data).hexdigest()
                pointer = f"version {LFS_SPEC}\noid sha256:{sha256}\nsize {len(data)}\n"
            oid = git_blob_sha1(pointer.encode() if pointer else data)
            files[path.relative_to(root).as_posix()] = _File(data, oid, sha256, pointer and len(pointer))
        listing = "".join(f"{path} {file.oid}\n" for path, file in files.items())
        sha = hashlib.sha1(f"{repo_id}\n{revision}\n{listing}".encode()).hexdigest()
        with self._lock:
            self._repos.setdefault(repo_id, {})[revision] = _Revision(sha, files)
            self._blobs.update({f.sha256: f.data for f in files.values() if f.sha256})
            if token is not None:
                self._tokens[repo_id] = token
        return sha

    def fail_once(self, filename: str, after_bytes: int) -> None:
        """The next GET of ``filename`` (its path in the repo) sends only ``after_bytes`` bytes of the body
        (the headers promise all of it) and then drops the connection."""
        with self._lock:
            self._fail[filename] = after_bytes

    # -- life cycle ---------------------------------------------------------------------------------
    def start(self) -> FakeHFHub:
        self._servers = [_Server(("127.0.0.1", 0), _Handler) for _ in range(2)]  # the hub and its "CDN"
        for server in self._servers:
            server.hub = self
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self.url, self.cdn_url = (f"http://127.0.0.1:{s.server_address[1]}" for s in self._servers)
        return self

    def stop(self) -> None:
        """Stop listening and cut open connections (clients keep idle ones in their pools)."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> FakeHFHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """What points huggingface_hub at this hub, for a child process (or monkeypatch.setenv before the
        client's first import). Valid after start()."""
        return {
            "HF_ENDPOINT": self.url,
            "HF_HUB_OFFLINE": "0",  # wins over TRANSFORMERS_OFFLINE too
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_XET": "1",  # belt and braces: no Xet headers are ever sent anyway
            "NO_PROXY": "127.0.0.1,localhost",  # so that an inherited HTTP(S)_PROXY cannot intercept us
            "no_proxy": "127.0.0.1,localhost",
        }

    def patch_client(self, monkeypatch) -> None:
        """Point the huggingface_hub imported in this process here, for one test (pytest's monkeypatch)."""
        from huggingface_hub import constants, file_download, hf_api

        for key, value in self.env().items():
            monkeypatch.setenv(key, value)
        template = self.url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "ENDPOINT", self.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        if hasattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE"):  # 0.x formats its own copy
            monkeypatch.setattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True, raising=False)
        monkeypatch.setattr(hf_api.api, "endpoint", self.url)  # behind huggingface_hub.model_info & co
        # No implicit token (this hub rejects unknown ones): pass token=..., or setenv HF_TOKEN after this.
        for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", os.devnull)  # read at import, from the real HF_HOME
        monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", os.devnull)
        transformers_hub = sys.modules.get("transformers.utils.hub")
        if hasattr(transformers_hub, "_is_offline_mode"):  # transformers 4.x copies HF_HUB_OFFLINE at import
            monkeypatch.setattr(transformers_hub, "_is_offline_mode", False)

    # -- serving ------------------------------------------------------------------------------------
    def _serve(self, h: _Handler) -> None:
        url, logged = urlsplit(h.path), {k: h.headers[k] for k in LOGGED_HEADERS if k in h.headers}
        with self._lock:
            self.requests.append((h.command, h.path, logged))
        if m := re.fullmatch(r"/api/models/(.+?)/tree/([^/]+)(?:/(.*))?", url.path):
            recursive = parse_qs(url.query).get("recursive", [""])[0].lower() in ("true", "1")
            return self._tree(h, unquote(m[1]), unquote(m[2]), unquote(m[3] or "").strip("/"), recursive)
        if m := re.fullmatch(r"/api/models/(.+?)(?:/revision/([^/]+))?", url.path):
            blobs = parse_qs(url.query).get("blobs", [""])[0].lower() in ("true", "1")  # files_metadata=True
            return self._model_info(h, unquote(m[1]), unquote(m[2] or "main"), blobs)
        if m := re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", url.path):
            return self._resolve(h, unquote(m[1]), unquote(m[2]), unquote(m[3]))
        if m := re.fullmatch(r"/cdn/([0-9a-f]{64})/(.+)", url.path):
            with self._lock:
                data = self._blobs.get(m[1])
            if data is not None:
                return self._bytes(h, unquote(m[2]), data, {"ETag": f'"{m[1]}"'})
        send(h, 404, b"Not Found", "text/plain")

    def _revision(self, h: _Handler, repo_id: str, rev: str) -> _Revision | None:
        """The revision, or None once the hub's refusal is sent."""
        auth = h.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        with self._lock:
            revisions, private = self._repos.get(repo_id), self._tokens.get(repo_id)
            known = token in self._tokens.values()
        if token is not None and not known:
            return _error(h, 401, None, "Invalid credentials in Authorization header")
        if revisions is None or (private is not None and token != private):  # the hub hides private repos
            if token is None:
                return _error(h, 401, "RepoNotFound", "Invalid username or password.")
            return _error(h, 404, "RepoNotFound", "Repository not found")
        found = revisions.get(rev) or next((r for r in revisions.values() if r.sha == rev), None)
        return found or _error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}")

    def _model_info(self, h: _Handler, repo_id: str, rev: str, blobs: bool) -> None:
        if (r := self._revision(h, repo_id, rev)) is None:
            return
        siblings = [{"rfilename": path} for path in r.files]
        if blobs:
            for sibling, f in zip(siblings, r.files.values(), strict=True):
                sibling.update(blobId=f.oid, size=len(f.data))
                if f.sha256:
                    sibling["lfs"] = {"sha256": f.sha256, "size": len(f.data), "pointerSize": f.pointer}
        info = {
            "_id": r.sha[:24], "id": repo_id, "modelId": repo_id, "author": repo_id.partition("/")[0],
            "sha": r.sha, "lastModified": DATE, "createdAt": DATE, "private": repo_id in self._tokens,
            "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "siblings": siblings,
            "usedStorage": sum(len(f.data) for f in r.files.values()),
        }  # fmt: skip
        send(h, 200, json.dumps(info).encode(), "application/json; charset=utf-8")

    def _tree(self, h: _Handler, repo_id: str, rev: str, folder: str, recursive: bool) -> None:
        if (r := self._revision(h, repo_id, rev)) is None:
            return
        prefix, entries = f"{folder}/" if folder else "", {}
        for path, f in r.files.items():
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                d = prefix + "/".join(parts[:depth])
                entries[d] = {"type": "directory", "oid": git_blob_sha1(d.encode()), "size": 0, "path": d}
            if recursive or len(parts) == 1:
                entries[path] = {"type": "file", "oid": f.oid, "size": len(f.data), "path": path}
                if f.sha256:
                    entries[path]["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": f.pointer}
        if folder and not entries:
            commit = {"X-Repo-Commit": r.sha}
            return _error(h, 404, "EntryNotFound", f'{folder} does not exist on "{rev}"', commit)
        send(h, 200, json.dumps(list(entries.values())).encode(), "application/json; charset=utf-8")

    def _resolve(self, h: _Handler, repo_id: str, rev: str, path: str) -> None:
        if (r := self._revision(h, repo_id, rev)) is None:
            return
        commit = {"X-Repo-Commit": r.sha}
        if (f := r.files.get(path)) is None:
            return _error(h, 404, "EntryNotFound", f'{path} does not exist on "{rev}"', commit)
        if f.sha256 is None:
            return self._bytes(h, path, f.data, {**commit, "ETag": f'"{f.oid}"'})
        linked = {"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": len(f.data), "ETag": f'"{f.oid}"'}
        location = f"{self.cdn_url}/cdn/{f.sha256}/{quote(path)}"
        send(h, 302, b"", "text/plain", {**commit, **linked, "Location": location})

    def _bytes(self, h: _Handler, path: str, data: bytes, extra: dict) -> None:
        """``data`` as 200, or 206 for a Range; cut short if fail_once(path) is pending (GET only)."""
        size, status, extra = len(data), 200, {**extra, "Accept-Ranges": "bytes"}
        start, end = 0, size - 1
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", h.headers.get("Range", "").strip())
        if match and match[0] != "bytes=-":
            first, last = match.groups()
            if first:
                start, end = int(first), min(int(last or end), end)
            else:
                start = max(size - int(last), 0)
            if start >= size or start > end:
                return send(h, 416, b"", "text/plain", {"Content-Range": f"bytes */{size}"})
            status, extra["Content-Range"] = 206, f"bytes {start}-{end}/{size}"
        with self._lock:
            cut = self._fail.pop(path, None) if h.command == "GET" else None
        send(h, status, data[start : end + 1], "application/octet-stream", extra, cut=cut)


def _error(h, status: int, code: str | None, message: str, extra: dict | None = None) -> None:
    headers = {**(extra or {}), "X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
    send(h, status, json.dumps({"error": message}).encode(), "application/json; charset=utf-8", headers)
