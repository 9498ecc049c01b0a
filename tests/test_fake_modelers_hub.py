"""The real openmind_hub client (0.9.1 and 1.3.0) against FakeModelersHub: what it asks, where it stores, what
it raises. These pin down the client's behaviour that duotune's Modelers downloads rely on.

Cache layout (both versions), for ``snapshot_download(repo_id, cache_dir=C)``:
  C/models--ORG--NAME/refs/REVISION            the commit sha REVISION resolved to (written for a sha too)
  C/models--ORG--NAME/snapshots/SHA/PATH       relative symlinks to ../(..)/blobs/ETAG; the returned folder
  C/models--ORG--NAME/blobs/ETAG               the bytes; ETAG = sha256 (LFS files) or git blob sha1;
                                               ETAG.incomplete while downloading (resumed with Range)
  C/.locks/models--ORG--NAME/ETAG.lock
Without cache_dir: ~/.cache/openmind/hub ($XDG_CACHE_HOME/openmind/hub). cache_dir must lie under /tmp or
$HOME and not in a dot-folder of $HOME (other than ~/.cache/openmind) unless HUB_WHITE_LIST_PATHS says so.
How the client is pointed at the fake: see fake_modelers_hub's docstring (here: hub.env() via monkeypatch).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import openmind_hub
import pytest
import requests
from conftest import write_repo
from fake_modelers_hub import FakeModelersHub
from openmind_hub import (
    EntryNotFoundError,
    GatedRepoError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    om_hub_download,
    snapshot_download,
)
from openmind_hub.plugins.openmind import file_download

FILES = {
    "config.json": b'{"model_type": "llama"}',
    "model.safetensors": b"\x00weights" * 1000,
    "tokenizer.json": b'{"version": "1.0"}',
    "pytorch_model.bin": b"pickle" * 100,
    "modeling_tiny.py": b"print('remote code')\n",
    "nested/dir/file.txt": b"deep\n",
}
LFS = {"model.safetensors", "pytorch_model.bin"}
TOKEN = "om-secret-token"


def etag(name: str, data: bytes) -> str:
    if name.rsplit("/", 1)[-1] in LFS:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def api(hub: FakeModelersHub, start: int = 0) -> list[tuple[str, str]]:
    return [(method, path) for method, path, _ in hub.requests[start:]]


def downloaded(hub: FakeModelersHub, start: int = 0) -> list[str]:
    """Repo paths whose bytes were fetched (GET .../media/PATH)."""
    return [path.split("/media/", 1)[1] for method, path in api(hub, start) if "/media/" in path]


def run_client(code: str, *args: str) -> subprocess.CompletedProcess:
    """A fresh Python process (fresh openmind_hub state) with this test's environment (hub.env() included)."""
    env = {**os.environ, "OM_HUB_DISABLE_PROGRESS_BARS": "1"}
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def repo_dir(tmp_path):
    return write_repo(tmp_path / "repo", FILES)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with FakeModelersHub(tmp_path / "hub") as server:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        # check_repo_exists remembers the repos it asked about for the life of the process: start afresh.
        monkeypatch.setattr(file_download, "HAS_CHECKED_REPO_EXISTS", set())
        yield server


def test_snapshot_download_fetches_every_file_into_the_cache(hub, repo_dir, tmp_path):
    sha = hub.add_repo("org/tiny", repo_dir)
    cache = tmp_path / "cache"
    folder = Path(snapshot_download("org/tiny", cache_dir=cache))

    storage = cache / "models--org--tiny"
    assert folder == storage / "snapshots" / sha
    assert (storage / "refs" / "main").read_text() == sha
    for name, data in FILES.items():
        pointer = folder / name
        assert pointer.read_bytes() == data
        assert pointer.is_symlink() and not os.path.isabs(os.readlink(pointer))
        assert pointer.resolve() == (storage / "blobs" / etag(name, data)).resolve()
        assert (cache / ".locks" / "models--org--tiny" / f"{etag(name, data)}.lock").exists()
    assert not list(storage.glob("blobs/*.incomplete"))

    calls = api(hub)
    assert calls[0] == ("GET", "/api/v1/model/org/tiny?ref=main")  # check_repo_exists: a modelers.cn host
    for listing in ("path=&ref=main", "path=nested&ref=main", "path=nested%2Fdir&ref=main"):
        assert ("GET", f"/api/v1/file/org/tiny?{listing}") in calls  # the tree, folder by folder
    assert ("GET", "/api/v1/file/org/tiny?ref=main&path=") in calls  # get_repo_last_commit: main -> sha
    assert sorted(downloaded(hub)) == sorted(FILES)
    assert all(
        headers["host"] == "modelers.cn" and "authorization" not in headers for *_, headers in hub.requests
    )
    assert openmind_hub.model_info("org/tiny").private is False


def test_allow_patterns_fetch_only_the_matching_files(hub, repo_dir, tmp_path):
    hub.add_repo("org/tiny", repo_dir)
    folder = Path(
        snapshot_download("org/tiny", cache_dir=tmp_path / "c", allow_patterns=["*.json", "*.safetensors"])
    )

    wanted = {"config.json", "tokenizer.json", "model.safetensors"}
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == wanted
    assert set(downloaded(hub)) == wanted
    asked = {path.split("path=", 1)[1] for _, path in api(hub) if "/info?" in path}
    assert asked == wanted  # the others were listed but never asked about nor fetched


def test_an_explicit_revision_branch_or_commit(hub, repo_dir, tmp_path):
    main_sha = hub.add_repo("org/tiny", repo_dir)
    v1_sha = hub.add_repo(
        "org/tiny", write_repo(tmp_path / "v1", {"config.json": b'{"v": 1}'}), revision="v1"
    )
    cache = tmp_path / "c"

    folder = Path(snapshot_download("org/tiny", revision="v1", cache_dir=cache))
    assert v1_sha != main_sha and folder == cache / "models--org--tiny" / "snapshots" / v1_sha
    assert [p.name for p in folder.iterdir()] == ["config.json"]
    assert (folder / "config.json").read_bytes() == b'{"v": 1}'
    assert (cache / "models--org--tiny" / "refs" / "v1").read_text() == v1_sha
    assert all("ref=v1" in path or "/v1/media/" in path for _, path in api(hub)[1:])  # [0]: model_info

    start = len(hub.requests)
    assert Path(snapshot_download("org/tiny", revision=v1_sha, cache_dir=cache)) == folder
    assert downloaded(hub, start) == []  # same blobs, nothing fetched again

    with pytest.raises(RevisionNotFoundError):
        snapshot_download("org/tiny", revision="no-such-branch", cache_dir=cache)


def test_a_private_repo_needs_its_token(hub, repo_dir, tmp_path):
    hub.add_repo("org/secret", repo_dir, token=TOKEN)
    with pytest.raises(RepositoryNotFoundError):  # the hub answers 404, as for a repo that does not exist
        snapshot_download("org/secret", cache_dir=tmp_path / "c")
    file_download.HAS_CHECKED_REPO_EXISTS.clear()  # it remembers repos it asked about, failed or not
    with pytest.raises(GatedRepoError):  # 401: a token the hub does not know
        snapshot_download("org/secret", cache_dir=tmp_path / "c", token="wrong")

    start = len(hub.requests)
    folder = Path(snapshot_download("org/secret", cache_dir=tmp_path / "c", token=TOKEN))
    assert (folder / "config.json").read_bytes() == FILES["config.json"]
    assert all(headers.get("authorization") == f"Bearer {TOKEN}" for *_, headers in hub.requests[start:])


def test_unknown_repos_and_files_raise_the_clients_errors(hub, repo_dir, tmp_path):
    hub.add_repo("org/tiny", repo_dir)
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("org/nope", cache_dir=tmp_path / "c")
    with pytest.raises(RepositoryNotFoundError):
        openmind_hub.model_info("org/nope")
    with pytest.raises(EntryNotFoundError):
        om_hub_download("org/tiny", "missing.bin", cache_dir=tmp_path / "c")


def test_an_interrupted_download_is_redone_and_never_left_looking_complete(hub, tmp_path):
    big = os.urandom(2 * 1024 * 1024)
    hub.add_repo("org/big", write_repo(tmp_path / "big", {"config.json": b"{}", "model.safetensors": big}))
    hub.fail_once("model.safetensors", after_bytes=700_000)
    cache = tmp_path / "c"

    # The first GET is cut short; the client's http_get notices (ChunkedEncodingError), waits 1 s and asks
    # again. With its 10 MiB read size no bytes of the cut response reach the file, so the second GET has no
    # Range: the file is fetched whole again, within the same call, in both versions.
    folder = Path(snapshot_download("org/big", cache_dir=cache))
    fetches = [headers for _, path, headers in hub.requests if path.endswith("/media/model.safetensors")]
    assert len(fetches) == 2 and all("range" not in headers for headers in fetches)
    assert (folder / "model.safetensors").read_bytes() == big
    assert not list(cache.rglob("*.incomplete"))

    start = len(hub.requests)
    again = Path(snapshot_download("org/big", cache_dir=cache))
    assert again == folder and (again / "model.safetensors").read_bytes() == big
    assert downloaded(hub, start) == []


def test_a_leftover_incomplete_blob_is_resumed_with_a_range_request(hub, tmp_path):
    big = os.urandom(2 * 1024 * 1024)
    hub.add_repo("org/big", write_repo(tmp_path / "big", {"model.safetensors": big}))
    blobs = tmp_path / "c" / "models--org--big" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"{etag('model.safetensors', big)}.incomplete").write_bytes(big[:500_000])  # a killed download

    folder = Path(snapshot_download("org/big", cache_dir=tmp_path / "c"))
    assert (folder / "model.safetensors").read_bytes() == big
    [(_, _, headers)] = [r for r in hub.requests if r[1].endswith("/media/model.safetensors")]
    assert headers["range"] == "bytes=500000-"  # answered 206 with the rest


def test_local_files_only_uses_the_cache_without_a_single_request(hub, repo_dir, tmp_path):
    hub.add_repo("org/tiny", repo_dir)
    with pytest.raises(LocalEntryNotFoundError):
        snapshot_download("org/tiny", cache_dir=tmp_path / "c", local_files_only=True)
    folder = snapshot_download("org/tiny", cache_dir=tmp_path / "c")

    start = len(hub.requests)
    assert snapshot_download("org/tiny", cache_dir=tmp_path / "c", local_files_only=True) == folder
    assert hub.requests[start:] == []


LOCAL_ONLY = """
import sys
from openmind_hub import snapshot_download
try:
    print(snapshot_download("org/tiny", cache_dir=sys.argv[1], local_files_only=True))
except Exception as e:
    print(type(e).__name__)
"""


def test_local_files_only_in_a_new_process_still_asks_the_hub_about_the_repo(hub, repo_dir, tmp_path):
    """check_repo_exists (a model_info call, once per repo and process, for modelers.cn endpoints) runs
    before local_files_only is looked at: offline, a new process gets a ConnectionError, not the cache."""
    hub.add_repo("org/tiny", repo_dir)
    folder = snapshot_download("org/tiny", cache_dir=tmp_path / "c")

    start = len(hub.requests)
    assert run_client(LOCAL_ONLY, str(tmp_path / "c")).stdout.strip() == folder
    assert api(hub, start) == [("GET", "/api/v1/model/org/tiny?ref=main")]

    hub.unreachable = True  # through the proxy a network failure is requests' ProxyError (a ConnectionError)
    assert run_client(LOCAL_ONLY, str(tmp_path / "c")).stdout.strip() == "ProxyError"
    assert issubclass(requests.exceptions.ProxyError, requests.exceptions.ConnectionError)


def test_network_failures_raise_connection_errors(hub, repo_dir, tmp_path):
    hub.add_repo("org/tiny", repo_dir)
    hub.unreachable = True
    with pytest.raises(requests.exceptions.ConnectionError):
        snapshot_download("org/tiny", cache_dir=tmp_path / "c")
    # om_hub_download turns a plain ConnectionError into LocalEntryNotFoundError (or the cached file), but
    # re-raises ProxyError and SSLError: behind a proxy (as here) that is what it raises.
    with pytest.raises(requests.exceptions.ProxyError):
        om_hub_download("org/tiny", "config.json", cache_dir=tmp_path / "c")


def test_openmind_hub_has_no_offline_environment_variable(hub, repo_dir, tmp_path, monkeypatch):
    source = Path(openmind_hub.__file__).parent
    assert not [p for p in source.rglob("*.py") if "OFFLINE" in p.read_text(encoding="utf-8")]
    for name in (
        "HF_HUB_OFFLINE",
        "HUB_OFFLINE",
        "OPENMIND_HUB_OFFLINE",
        "OPENMIND_OFFLINE",
        "OM_HUB_OFFLINE",
    ):
        monkeypatch.setenv(name, "1")
    hub.add_repo("org/tiny", repo_dir)
    snapshot_download("org/tiny", cache_dir=tmp_path / "c")
    assert sorted(downloaded(hub)) == sorted(FILES)  # all ignored: only local_files_only=True stays offline


OPENMIND_OFFLINE = """
import sys, openmind_hub
from openmind.utils.hub import OpenMindHub, is_offline_mode, snapshot_download
print(is_offline_mode(), snapshot_download is openmind_hub.snapshot_download)
print(OpenMindHub.cached_file("org/tiny", "config.json", cache_dir=sys.argv[1]))
"""


@pytest.mark.openmind
def test_openmind_offline_forces_local_files_only_in_cached_file_only(hub, repo_dir, tmp_path, monkeypatch):
    """OPENMIND_OFFLINE (the openmind library's, read at its import) makes openmind's cached_file pass
    local_files_only=True (after the model_info check). openmind's snapshot_download is openmind_hub's,
    which ignores it (test_openmind_hub_has_no_offline_environment_variable)."""
    hub.add_repo("org/tiny", repo_dir)
    folder = snapshot_download("org/tiny", cache_dir=tmp_path / "c")
    monkeypatch.setenv("OPENMIND_OFFLINE", "1")

    start = len(hub.requests)
    proc = run_client(OPENMIND_OFFLINE, str(tmp_path / "c"))
    printed = [line for line in proc.stdout.splitlines() if not line.startswith("[")]  # openmind logs here
    assert printed == ["True True", f"{folder}/config.json"], proc.stderr
    assert api(hub, start) == [("GET", "/api/v1/model/org/tiny?ref=main")]  # check_repo_exists only
