"""The real huggingface_hub client (0.36.2 on requests, 2.4.0 on httpx2) against FakeHFHub: what it asks,
where it stores, what it raises. These pin down the client's behaviour that duotune's downloads rely on.

In-process tests use ``hub.patch_client(monkeypatch)`` (the client copied HF_ENDPOINT / HF_HUB_OFFLINE
into ``huggingface_hub.constants`` at import; tests/conftest.py sets HF_HUB_OFFLINE=1 for the session);
child processes get ``env={**os.environ, **hub.env()}``.

Cache layout (both versions), for ``snapshot_download(repo_id, cache_dir=C)``:
  C/models--ORG--NAME/refs/REVISION        the commit sha a branch resolved to (none for a sha)
  C/models--ORG--NAME/snapshots/SHA/PATH   relative symlinks to ../(..)/blobs/ETAG; the returned folder
  C/models--ORG--NAME/blobs/ETAG           ETAG = sha256 (LFS files) or git blob sha1
  C/models--ORG--NAME/trees/SHA.json       2.x only: the tree listing (offline completeness checks)
Requests: 0.x asks the model info (siblings) then HEAD + GET per file; 2.x asks the model info (sha), the
recursive tree, then HEAD + GET per file. LFS files are GET from the CDN (no Authorization header).
A body cut short: 2.x's http_get resumes it within the same call (Range: bytes=N-, after a 1 s sleep);
0.x raises requests' ChunkedEncodingError, keeps blobs/ETAG.incomplete and the next call resumes it. N
counts whole DOWNLOAD_CHUNK_SIZE (10 MiB) pieces only: a partial piece is lost, so smaller files restart.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import huggingface_hub
import pytest
from conftest import write_repo
from fake_hf_hub import FakeHFHub
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

HTTPX_CLIENT = int(huggingface_hub.__version__.split(".")[0]) >= 1  # 1.0 moved from requests to httpx
FILES = {
    "config.json": b'{"model_type": "llama"}',
    "model.safetensors": b"\x00weights" * 500,
    "tokenizer.json": b'{"version": "1.0"}',
    "pytorch_model.bin": b"pickle" * 100,
    "modeling_tiny.py": b"print('remote code')\n",
    "nested/dir/file.txt": b"deep\n",
}
LFS = {"model.safetensors", "pytorch_model.bin"}
TOKEN = "hf_fake_secret"


def etag(name: str, data: bytes) -> str:
    if name in LFS:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def tree(folder: str | Path) -> dict[str, bytes]:
    root = Path(folder)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def fetched(hub: FakeHFHub, start: int = 0) -> list[str]:
    """Repo paths whose bytes were fetched: GET /REPO/resolve/REV/PATH or GET CDN/cdn/SHA256/PATH."""
    paths = []
    for method, path, _ in hub.requests[start:]:
        parts = urlsplit(path).path.split("/")
        if method == "GET" and "resolve" in parts:
            paths.append(unquote("/".join(parts[parts.index("resolve") + 2 :])))
        elif method == "GET" and parts[1] == "cdn":
            paths.append(unquote("/".join(parts[3:])))
    return paths


def run_client(code: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    argv, env = [sys.executable, "-c", code, *args], {**os.environ, **env}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with FakeHFHub() as hub:
        hub.patch_client(monkeypatch)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "default-cache"))
        yield hub


@pytest.fixture
def repo_dir(tmp_path):
    return write_repo(tmp_path / "repo", FILES)


def test_snapshot_download_all_files_then_only_allowed_ones(hub, repo_dir, tmp_path):
    sha = hub.add_repo("org/tiny", repo_dir)
    folder = snapshot_download("org/tiny", cache_dir=tmp_path / "all")
    assert tree(folder) == FILES
    assert sorted(fetched(hub)) == sorted(FILES)
    assert all("authorization" not in headers for _, _, headers in hub.requests)

    start = len(hub.requests)
    folder = snapshot_download("org/tiny", cache_dir=tmp_path / "json", allow_patterns=["*.json"])
    assert sorted(tree(folder)) == ["config.json", "tokenizer.json"]
    assert sorted(fetched(hub, start)) == ["config.json", "tokenizer.json"]
    others = [name for name in FILES if not name.endswith(".json")]
    assert not [path for _, path, _ in hub.requests[start:] for name in others if name in unquote(path)]

    info = HfApi().model_info("org/tiny")
    assert info.sha == sha and sorted(s.rfilename for s in info.siblings) == sorted(FILES)
    assert huggingface_hub.model_info("org/tiny").sha == sha  # the module-level HfApi is patched too
    siblings = {s.rfilename: s for s in HfApi().model_info("org/tiny", files_metadata=True).siblings}
    assert siblings["model.safetensors"].lfs.sha256 == etag("model.safetensors", FILES["model.safetensors"])
    assert siblings["config.json"].blob_id == etag("config.json", FILES["config.json"])
    assert sorted(HfApi().list_repo_files("org/tiny")) == sorted(FILES)
    assert HfApi().file_exists("org/tiny", "nested/dir/file.txt")
    assert not HfApi().file_exists("org/tiny", "nested/dir/other.txt")


def test_revisions_and_cache_layout(hub, repo_dir, tmp_path):
    v2_files = {**FILES, "config.json": b'{"model_type": "llama", "v": 2}', "v2.txt": b"new\n"}
    sha_main = hub.add_repo("org/tiny", repo_dir)
    sha_v2 = hub.add_repo("org/tiny", write_repo(tmp_path / "v2", v2_files), revision="v2")
    assert sha_main != sha_v2 and len(sha_v2) == 40
    assert hub.add_repo("org/tiny", write_repo(tmp_path / "v2", v2_files), revision="v2") == sha_v2
    cache = tmp_path / "cache"
    storage = cache / "models--org--tiny"

    folder = Path(snapshot_download("org/tiny", revision="v2", cache_dir=cache))
    assert folder == storage / "snapshots" / sha_v2
    assert tree(folder) == v2_files
    assert (storage / "refs" / "v2").read_text() == sha_v2
    for name, data in v2_files.items():
        assert (folder / name).is_symlink()
        assert (folder / name).resolve() == (storage / "blobs" / etag(name, data)).resolve()

    folder = Path(snapshot_download("org/tiny", revision=sha_main, cache_dir=cache))  # a commit sha
    assert folder == storage / "snapshots" / sha_main
    assert tree(folder) == FILES
    assert sorted(p.name for p in (storage / "refs").iterdir()) == ["v2"]
    start = len(hub.requests)
    path = hf_hub_download("org/tiny", "config.json", cache_dir=cache)  # main: a HEAD finds it cached
    assert Path(path) == folder / "config.json" and (storage / "refs" / "main").read_text() == sha_main
    assert [method for method, _, _ in hub.requests[start:]] == ["HEAD"]


def test_private_repo_needs_its_token(hub, repo_dir, tmp_path):
    hub.add_repo("org/private", repo_dir, token=TOKEN)
    with pytest.raises(RepositoryNotFoundError) as err:  # the hub hides private repos: 401 RepoNotFound
        snapshot_download("org/private", cache_dir=tmp_path / "c")
    assert err.value.response.status_code == 401 and not isinstance(err.value, GatedRepoError)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/private", "config.json", cache_dir=tmp_path / "c")
    with pytest.raises(HfHubHTTPError) as err:  # a token the hub does not know
        snapshot_download("org/private", cache_dir=tmp_path / "c", token="hf_wrong")
    assert err.value.response.status_code == 401 and not isinstance(err.value, RepositoryNotFoundError)
    assert fetched(hub) == []

    start = len(hub.requests)
    folder = snapshot_download("org/private", cache_dir=tmp_path / "c", token=TOKEN)
    assert tree(folder) == FILES
    for method, path, headers in hub.requests[start:]:  # the token goes to the hub, never to the CDN
        expected = None if path.startswith("/cdn/") else f"Bearer {TOKEN}"
        assert headers.get("authorization") == expected, (method, path)


def test_unknown_repo_file_and_revision(hub, repo_dir, tmp_path):
    hub.add_repo("org/tiny", repo_dir)
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("org/missing", cache_dir=tmp_path / "c")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/missing", "config.json", cache_dir=tmp_path / "c")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("org/missing")
    with pytest.raises(EntryNotFoundError) as err:
        hf_hub_download("org/tiny", "missing.txt", cache_dir=tmp_path / "c")
    assert not isinstance(err.value, LocalEntryNotFoundError) and err.value.response.status_code == 404
    with pytest.raises(RevisionNotFoundError):
        snapshot_download("org/tiny", revision="nope", cache_dir=tmp_path / "c")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/tiny", "config.json", revision="nope", cache_dir=tmp_path / "c")
    assert fetched(hub) == []


def test_interrupted_download_is_resumed_with_a_range_request(hub, tmp_path, monkeypatch):
    big = random.Random(0).randbytes(2 * 2**20)
    hub.add_repo("org/big", write_repo(tmp_path / "repo", {"model.safetensors": big, "config.json": b"{}"}))
    # Both clients read the body in DOWNLOAD_CHUNK_SIZE (10 MiB) pieces and lose a partial piece when the
    # connection drops, so with smaller pieces the bytes received before the cut are kept and resumed from.
    chunk = 64 * 2**10
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", chunk)
    hub.fail_once("model.safetensors", 1_000_000)
    cache = tmp_path / "cache"
    if HTTPX_CLIENT:  # http_get catches httpx's RemoteProtocolError and resumes at once (after 1 s)
        folder = snapshot_download("org/big", cache_dir=cache)
    else:  # requests' ChunkedEncodingError escapes; blobs/SHA256.incomplete keeps what came
        import requests

        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            snapshot_download("org/big", cache_dir=cache)
        (partial,) = (cache / "models--org--big" / "blobs").glob("*.incomplete")
        assert partial.stat().st_size == 1_000_000 // chunk * chunk
        folder = snapshot_download("org/big", cache_dir=cache)
    assert (Path(folder) / "model.safetensors").read_bytes() == big
    gets = [headers for method, path, headers in hub.requests if method == "GET" and path.startswith("/cdn/")]
    assert gets == [{}, {"range": f"bytes={1_000_000 // chunk * chunk}-"}]


def test_offline_uses_the_cache_and_sends_nothing(hub, repo_dir, tmp_path):
    """A child process with hub.env() downloads; with HF_HUB_OFFLINE=1 (read at import) it asks nothing."""
    sha = hub.add_repo("org/tiny", repo_dir)
    cache = tmp_path / "cache"
    code = (
        "import sys; from huggingface_hub import snapshot_download;"
        "print(snapshot_download(sys.argv[1], cache_dir=sys.argv[2]))"
    )
    online = run_client(code, "org/tiny", str(cache), env=hub.env())
    assert online.returncode == 0, online.stderr
    folder = online.stdout.strip()
    assert Path(folder) == cache / "models--org--tiny" / "snapshots" / sha and tree(folder) == FILES
    assert sorted(fetched(hub)) == sorted(FILES)

    start = len(hub.requests)
    offline = run_client(code, "org/tiny", str(cache), env={**hub.env(), "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.strip() == folder
    assert snapshot_download("org/tiny", cache_dir=cache, local_files_only=True) == folder
    assert hf_hub_download("org/tiny", "nested/dir/file.txt", cache_dir=cache, local_files_only=True)
    assert hub.requests[start:] == []
    with pytest.raises(LocalEntryNotFoundError):
        snapshot_download("org/tiny", cache_dir=tmp_path / "empty", local_files_only=True)
    assert hub.requests[start:] == []


def test_http_surface(hub, repo_dir):
    """HEAD, redirects, ranges and errors as the hub sends them (the contract the clients rely on)."""
    sha = hub.add_repo("org/tiny", repo_dir)
    host = urlsplit(hub.url).netloc

    def ask(method, path, url=None, **headers):
        conn = http.client.HTTPConnection(urlsplit(url or hub.url).netloc, timeout=10)
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body

    status, headers, body = ask("HEAD", "/org/tiny/resolve/main/config.json")
    assert (status, body, headers["x-repo-commit"]) == (200, b"", sha)
    assert headers["etag"] == f'"{etag("config.json", FILES["config.json"])}"'
    assert headers["content-length"] == str(len(FILES["config.json"]))
    assert not [k for k in headers if k.startswith("x-xet")]

    data = FILES["model.safetensors"]
    status, headers, _ = ask("HEAD", "/org/tiny/resolve/main/model.safetensors")
    assert status == 302 and headers["x-repo-commit"] == sha and headers["x-linked-size"] == str(len(data))
    assert headers["x-linked-etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    cdn = urlsplit(headers["location"])
    assert cdn.netloc != host  # another origin, like the real CDN
    assert ask("GET", cdn.path, headers["location"])[2] == data
    status, headers, body = ask("GET", cdn.path, headers["location"], Range="bytes=2-5")
    assert (status, body, headers["content-range"]) == (206, data[2:6], f"bytes 2-5/{len(data)}")
    assert ask("GET", "/org/tiny/resolve/main/config.json", Range="bytes=-3")[2] == FILES["config.json"][-3:]
    assert ask("GET", "/org/tiny/resolve/main/config.json", Range="bytes=999-")[0] == 416

    status, headers, _ = ask("GET", "/org/tiny/resolve/main/missing.txt")
    assert (status, headers["x-error-code"], headers["x-repo-commit"]) == (404, "EntryNotFound", sha)
    assert ask("GET", "/api/models/org/tiny/revision/nope")[1]["x-error-code"] == "RevisionNotFound"
    status, headers, _ = ask("GET", "/api/models/org/none")  # anonymous: 401, as for a private repo
    assert (status, headers["x-error-code"]) == (401, "RepoNotFound")
    status, headers, _ = ask("GET", "/api/models/org/tiny", Authorization="Bearer hf_unknown")
    assert (status, headers["x-error-message"]) == (401, "Invalid credentials in Authorization header")
    assert "x-error-code" not in headers
    assert ask("GET", "/nowhere")[0] == 404
