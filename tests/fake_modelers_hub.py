"""A local stand-in for the Modelers hub (modelers.cn, the hub of Huawei's openMind). For tests only.

It lets tests drive the real ``openmind_hub`` client (read and checked against 0.9.1 and 1.3.0) with no
internet. That client refuses every endpoint and URL whose host does not end in a white-listed domain
(modelers.cn, openmind.cn, ...), so ``https://127.0.0.1:PORT`` cannot work. This server therefore listens on
127.0.0.1 as an HTTP proxy that takes ``CONNECT modelers.cn:443`` (or a subdomain; other hosts get 403) and
answers inside the tunnel itself, over TLS with a throwaway ``trustme`` CA. ``env()`` gives HTTPS_PROXY and
REQUESTS_CA_BUNDLE, which ``requests`` reads at every request: the client's own default endpoint
``https://modelers.cn`` (= ``url``) then reaches this fake, in a subprocess and in-process alike, whatever
``openmind_hub`` read at import (it reads OPENMIND_HUB_ENDPOINT once, into ENDPOINT constants).

Emulated: the downloads' routes, in the envelope of the hub's backend (merlin-server),
``{"code": "", "msg": "", "data": ...}``, errors ``{"code": "<code>", "msg": "...", "data": null}``:
  GET /api/v1/model/OWNER/NAME?ref=R             model_info / repo_info; also check_repo_exists, which
                                                 snapshot_download / om_hub_download call first for a
                                                 modelers.cn endpoint (once per repo and process), even
                                                 with local_files_only=True
  GET /api/v1/file/OWNER/NAME?ref=R&path=P       one level of the tree + last commit: list_repo_tree,
                                                 list_repo_files (a call per folder), get_repo_last_commit
  GET /api/v1/file/OWNER/NAME/info?ref=R&path=P  one file: branch_last_commit (commit sha), etag, size
  GET|HEAD /api/v1/file/OWNER/NAME/R/media/PATH  the bytes; ``Range: bytes=A-`` / ``A-B``: 206 (or 416)
R is a branch or a commit sha. The client checks each file against its etag: sha256 for LFS files
(LFS_SUFFIXES), else the git blob sha1. Errors as ``om_raise_for_status`` maps them: unknown revision 404
``ref_not_exist`` (RevisionNotFoundError); unknown path 404 ``branch_or_path_not_found``
(EntryNotFoundError); unknown repo 404 ``repo_not_found`` / ``model_not_found`` (RepositoryNotFoundError),
and so is a private repo asked for without its token (the hub hides private repos); a token the hub does
not know: 401 ``access_token_invalid`` (GatedRepoError). Tokens come as ``Authorization: Bearer <token>``.
While ``unreachable`` is true, requests are logged and dropped unanswered; through a proxy, requests (urllib3)
reports that, like any connection failure, as ``requests.exceptions.ProxyError`` (a ConnectionError).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import ssl
import threading
from collections import namedtuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import trustme
from fake_hub_http import git_blob_sha1, send

LFS_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".gguf", ".npz"}
COMMIT_DATE = "2024-06-01T08:00:00Z"
LOGGED_HEADERS = ("host", "authorization", "range")
JSON = "application/json; charset=utf-8"
HOST = "modelers.cn"  # and its subdomains: endpoints the client accepts and sends through the proxy

_File = namedtuple("_File", "data etag lfs")
_Revision = namedtuple("_Revision", "sha files")  # files: {path in the repo: _File}


class _ProxyHandler(BaseHTTPRequestHandler):
    """The plain-HTTP side: CONNECT to the hub's host only, then HTTPS inside the tunnel."""

    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    timeout = 30

    def do_CONNECT(self):
        hub, host = self.server.hub, self.path.rsplit(":", 1)[0]
        if host != HOST and not host.endswith("." + HOST):
            return self.send_error(403, f"this fake hub only tunnels to {HOST}")
        self.send_response(200, "Connection established")
        self.end_headers()
        self.close_connection = True
        try:
            conn = hub._context.wrap_socket(self.connection, server_side=True)
        except OSError:  # ssl.SSLError too: a client that does not trust our CA
            return
        with hub._lock:
            hub._conns.add(conn)
        try:
            _HubHandler(conn, self.client_address, self.server)
        except OSError:
            pass
        finally:
            with hub._lock:  # stop() shuts these down under the same lock
                hub._conns.discard(conn)
                conn.close()

    def log_message(self, format, *args):  # quiet
        pass


class _HubHandler(_ProxyHandler):
    """The HTTPS side: the hub's API."""

    def do_GET(self):
        self.server.hub._serve(self)

    do_HEAD = do_GET


class _Server(ThreadingHTTPServer):
    daemon_threads, block_on_close = True, False


class FakeModelersHub:
    """A Modelers hub behind a local proxy, serving folders as model repos (see the module docstring)."""

    def __init__(self, tmp_dir: Path | str):
        tmp = Path(tmp_dir)
        tmp.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        self.ca_file = str(tmp / "fake-modelers-ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        chain = str(tmp / "fake-modelers-server.pem")
        ca.issue_cert(HOST, f"*.{HOST}").private_key_and_cert_chain_pem.write_to_path(chain)
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(chain)
        self.url = f"https://{HOST}"  # the client's default endpoint; its traffic goes to proxy_url
        self.proxy_url = ""
        self.unreachable = False
        self.requests: list[tuple[str, str, dict]] = []  # (method, path?query, LOGGED_HEADERS present)
        self._repos: dict[str, dict[str, _Revision]] = {}
        self._tokens: dict[str, str] = {}  # private repos
        self._fail: dict[str, int] = {}
        self._lock = threading.Lock()
        self._conns: set[ssl.SSLSocket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- set-up -------------------------------------------------------------------------------------
    def add_repo(
        self, repo_id: str, folder: Path | str, *, token: str | None = None, revision: str = "main"
    ) -> str:
        """Serve every file under ``folder`` as model repo ``repo_id`` at ``revision``; return its commit
        sha (deterministic). With ``token`` the repo is private. Call again for more revisions."""
        root = Path(folder)
        files = {}
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            lfs = path.suffix in LFS_SUFFIXES
            etag = hashlib.sha256(data).hexdigest() if lfs else git_blob_sha1(data)
            files[path.relative_to(root).as_posix()] = _File(data, etag, lfs)
        listing = "".join(f"{path} {file.etag}\n" for path, file in files.items())
        sha = hashlib.sha1(f"{repo_id}\n{revision}\n{listing}".encode()).hexdigest()
        with self._lock:
            self._repos.setdefault(repo_id, {})[revision] = _Revision(sha, files)
            if token is not None:
                self._tokens[repo_id] = token
        return sha

    def fail_once(self, filename: str, after_bytes: int) -> None:
        """The next GET of ``filename`` (its path in the repo) sends only ``after_bytes`` bytes of the body
        (the headers promise all of it) and then drops the connection."""
        with self._lock:
            self._fail[filename] = after_bytes

    # -- life cycle ---------------------------------------------------------------------------------
    def start(self) -> FakeModelersHub:
        self._server = _Server(("127.0.0.1", 0), _ProxyHandler)
        self._server.hub = self
        self.proxy_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut the open tunnels (clients keep idle connections in their pools)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = None
        with self._lock:  # shut down under the thread reading it, through a duplicate of the socket
            for conn in self._conns:
                try:
                    with socket.fromfd(conn.fileno(), socket.AF_INET, socket.SOCK_STREAM) as dup:
                        dup.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self) -> FakeModelersHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """What sends openmind_hub (in this process, via monkeypatch.setenv, or a child) here and makes it
        trust our CA. Valid after start()."""
        return {
            "OPENMIND_HUB_ENDPOINT": self.url,  # the client's default anyway; read at its import
            "HTTPS_PROXY": self.proxy_url,  # read by requests at each request
            "https_proxy": self.proxy_url,  # urllib lets the lower-case name win
            "HUB_HTTPS_PROXY": self.proxy_url,  # openmind_hub's own proxy for file bytes, if set
            "NO_PROXY": "127.0.0.1,localhost",  # so that an inherited NO_PROXY cannot bypass us
            "no_proxy": "127.0.0.1,localhost",
            "REQUESTS_CA_BUNDLE": self.ca_file,  # requests prefers it to CURL_CA_BUNDLE; set both
            "CURL_CA_BUNDLE": self.ca_file,
        }

    # -- serving ------------------------------------------------------------------------------------
    def _serve(self, h: _HubHandler) -> None:
        url = urlsplit(h.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        headers = {k: h.headers[k] for k in LOGGED_HEADERS if h.headers.get(k) is not None}
        with self._lock:
            self.requests.append((h.command, h.path, headers))
        if self.unreachable:
            h.close_connection = True  # no answer at all
            return
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        if parts[:3] == ["api", "v1", "model"] and len(parts) == 5:
            return self._model_info(h, f"{parts[3]}/{parts[4]}")
        if parts[:3] == ["api", "v1", "file"] and len(parts) >= 5:
            repo_id, rest = f"{parts[3]}/{parts[4]}", parts[5:]
            if not rest:
                return self._tree(h, self._lookup(h, repo_id, query.get("ref")), query.get("path", ""))
            if rest == ["info"]:
                return self._info(h, self._lookup(h, repo_id, query.get("ref")), query.get("path", ""))
            if len(rest) >= 3 and rest[1] == "media":
                return self._media(h, self._lookup(h, repo_id, rest[0]), "/".join(rest[2:]))
        send(h, 404, b"404 page not found", "text/plain")  # what gin answers for an unknown route

    def _access(self, h: _HubHandler, repo_id: str, not_found: str) -> dict[str, _Revision] | None:
        """The repo's revisions, or None once the hub's error is sent."""
        auth = h.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        with self._lock:
            revisions, private = self._repos.get(repo_id), self._tokens.get(repo_id)
            known = token in self._tokens.values()
        if token is not None and not known:
            return _error(h, 401, "access_token_invalid", "access token invalid")
        if revisions is None or (private is not None and token != private):
            return _error(h, 404, not_found, "not found")  # the hub hides private repos
        return revisions

    def _lookup(self, h: _HubHandler, repo_id: str, ref: str | None) -> _Revision | None:
        if (revisions := self._access(h, repo_id, "repo_not_found")) is None:
            return None
        ref = ref or "main"
        found = revisions.get(ref) or next((r for r in revisions.values() if r.sha == ref), None)
        return found or _error(h, 404, "ref_not_exist", f"ref {ref} not exist")

    def _model_info(self, h: _HubHandler, repo_id: str) -> None:
        if self._access(h, repo_id, "model_not_found") is None:
            return
        owner, name = repo_id.split("/")
        data = {
            "id": hashlib.sha1(repo_id.encode()).hexdigest()[:16], "owner": owner, "name": name,
            "fullname": name, "visibility": "private" if repo_id in self._tokens else "public",
            "download_count": 0, "like_count": 0, "created_at": 1717200000, "updated_at": 1717200000,
            "labels": {"task": "text-generation", "frameworks": ["PyTorch"], "others": []},
        }  # fmt: skip
        _ok(h, data)

    def _tree(self, h: _HubHandler, rev: _Revision | None, path: str) -> None:
        if rev is None:
            return
        path = path.strip("/")
        if path in rev.files:
            return _error(h, 404, "not_dir", "not dir")
        prefix = f"{path}/" if path else ""
        dirs, files = set(), set()
        for file in rev.files:
            if file.startswith(prefix):
                head, sep, _ = file[len(prefix) :].partition("/")
                (dirs if sep else files).add(prefix + head)
        if path and not (dirs or files):
            return _error(h, 404, "branch_or_path_not_found", "branch or path not found")
        commit = _commit(rev)
        tree = [
            {"name": d.rsplit("/", 1)[-1], "path": d, "type": "dir", "commit": commit} for d in sorted(dirs)
        ]
        tree += [self._entry(rev, f) for f in sorted(files)]
        _ok(h, {"tree": tree, "last_commit": {"commit": commit}})

    def _info(self, h: _HubHandler, rev: _Revision | None, path: str) -> None:
        if rev is None:
            return
        path = path.strip("/")
        if path in rev.files:
            return _ok(h, {**self._entry(rev, path), "branch_last_commit": rev.sha})
        if any(f.startswith(f"{path}/") for f in rev.files):
            return _error(h, 404, "not_file", "not file")
        _error(h, 404, "branch_or_path_not_found", "branch or path not found")

    def _entry(self, rev: _Revision, path: str) -> dict:
        f = rev.files[path]
        return {
            "name": path.rsplit("/", 1)[-1], "path": path, "type": "file", "size": len(f.data),
            "etag": f.etag, "is_lfs": f.lfs, "commit": _commit(rev),
        }  # fmt: skip

    def _media(self, h: _HubHandler, rev: _Revision | None, path: str) -> None:
        if rev is None:
            return
        if path not in rev.files:
            return _error(h, 404, "branch_or_path_not_found", "branch or path not found")
        file = rev.files[path]
        size = len(file.data)
        start, end, status = 0, size - 1, 200
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", h.headers.get("Range", "").strip())
        if match and match.group(0) != "bytes=-":
            first, last = match.groups()
            start, end = (
                (int(first), min(int(last or end), end)) if first else (max(size - int(last), 0), end)
            )
            if start >= size or start > end:
                return send(h, 416, b"", "text/plain", {"Content-Range": f"bytes */{size}"})
            status = 206
        with self._lock:
            cut = self._fail.pop(path, None) if h.command == "GET" else None
        extra = {"Accept-Ranges": "bytes", "ETag": f'"{file.etag}"'}
        if status == 206:
            extra["Content-Range"] = f"bytes {start}-{end}/{size}"
        send(h, status, file.data[start : end + 1], "application/octet-stream", extra, cut=cut)


def _commit(rev: _Revision) -> dict:
    return {"commit_sha": rev.sha, "message": "upload files", "created": COMMIT_DATE}


def _ok(h, data) -> None:
    send(h, 200, json.dumps({"code": "", "msg": "", "data": data}).encode(), JSON)


def _error(h, status: int, code: str, msg: str) -> None:
    send(h, status, json.dumps({"code": code, "msg": msg, "data": None}).encode(), JSON)
