"""Models from the Hugging Face hub through the real huggingface_hub client, against a local stand-in
(tests/fake_hf_hub.py, HF_ENDPOINT=http://127.0.0.1:PORT), plus offline use and every download error."""

from __future__ import annotations

import errno
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import assert_secret_nowhere, run_cli
from duotune.trainer.common.errors import UserError
from duotune.trainer.model.hub import ModelRef, _explain, check_model_folder, default_hub, parse_model_spec
from fake_hf_hub import FakeHFHub

REPO = "duotune/tiny-llama"
TOKEN = "hf_private_token_0123456789"


@pytest.fixture
def hub():
    with FakeHFHub() as server:
        yield server


def _env(hub: FakeHFHub, tmp_path: Path, **extra) -> dict:
    return {
        **hub.env(),
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_CACHE": str(tmp_path / "hf-home" / "hub"),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_TOKEN": "",
        **extra,
    }


def _fetched(hub: FakeHFHub) -> list[str]:
    """Files whose bytes were fetched (from the repo, or for LFS files from the CDN it redirects to)."""
    return [
        path.split("?")[0].rsplit("/", 1)[-1]
        for method, path, _ in hub.requests
        if method == "GET" and ("/resolve/" in path or "/cdn/" in path)
    ]


# ------------------------------------------------------------------------------------ naming a model


def test_model_specs_say_which_hub(tmp_path, monkeypatch, demo_model_dir):
    monkeypatch.delenv("DUOTUNE_HUB", raising=False)
    monkeypatch.delenv("USE_OPENMIND_HUB", raising=False)
    assert parse_model_spec("hf://org/name").hub == "hf"
    assert parse_model_spec("modelers://org/name").hub == "modelers"
    assert parse_model_spec("org/name").hub == "hf"
    assert parse_model_spec("org/name", "modelers").hub == "modelers"
    monkeypatch.setenv("DUOTUNE_HUB", "modelers")
    assert parse_model_spec("org/name").hub == "modelers" and default_hub(None) == (
        "modelers",
        "$DUOTUNE_HUB",
    )
    assert parse_model_spec("org/name", "hf").hub == "hf"  # the recipe wins over the environment
    assert parse_model_spec("hf://org/name").hub == "hf"  # and the id's own prefix over both
    monkeypatch.delenv("DUOTUNE_HUB")
    monkeypatch.setenv("USE_OPENMIND_HUB", "1")
    assert parse_model_spec("org/name").hub == "modelers"
    assert parse_model_spec(str(demo_model_dir)).kind == "local"
    for bad in ("./missing/folder", "a/b/c", "modelers://name-without-org", "hf://bad name/x"):
        with pytest.raises(UserError):
            parse_model_spec(bad)


def test_folders_that_are_not_loadable_models_are_refused(tmp_path, demo_model_dir):
    with pytest.raises(UserError, match="not a model folder"):
        check_model_folder(tmp_path, "x")
    shutil.copytree(demo_model_dir, tmp_path / "m")
    m = tmp_path / "m"
    check_model_folder(m, "m")
    (m / "model.safetensors").rename(m / "model-00001-of-00002.safetensors")
    (m / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}'
    )
    with pytest.raises(UserError, match="incomplete: 1 weight shard"):
        check_model_folder(m, "m")
    (m / "model.safetensors.index.json").unlink()
    (m / "model-00001-of-00002.safetensors").unlink()
    (m / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="only pickle weights.*allow_pickle_weights"):
        check_model_folder(m, "m")
    check_model_folder(m, "m", allow_pickle_weights=True)


def test_disk_full_is_explained():
    ref = ModelRef("hf://o/n", "hub", "hf", "o/n")
    text = _explain(OSError(errno.ENOSPC, "No space left on device"), ref, False, "/cache")
    assert text.startswith("disk full while downloading o/n from Hugging Face into /cache")


# ----------------------------------------------------------------------------------- the real client


def test_download_fetches_only_what_loading_needs_into_the_hf_cache(hub, model_repo, tmp_path):
    hub.add_repo(REPO, model_repo)
    env = _env(hub, tmp_path)
    proc = run_cli("duotune", "download", REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fetched = _fetched(hub)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(fetched)
    assert "modeling_custom.py" not in fetched and "training_args.bin" not in fetched
    snapshots = tmp_path / "hf-home" / "hub" / "models--duotune--tiny-llama" / "snapshots"
    assert len(list(snapshots.iterdir())) == 1 and str(snapshots) in proc.stdout
    proc = run_cli("duotune", "download", REPO, "--trust-remote-code", "--allow-pickle-weights", env=env)
    assert proc.returncode == 0 and {"modeling_custom.py", "training_args.bin"} <= set(_fetched(hub))


def test_train_from_the_hub_then_offline_without_a_single_request(hub, model_repo, tmp_path):
    hub.add_repo(REPO, model_repo)
    common = ["--device", "cpu", "max_steps=1", "max_samples=4", "report_to=none"]
    online = run_cli("train", "--model", f"hf://{REPO}", *common, f"output_dir={tmp_path}/a", cwd=tmp_path,
                     env=_env(hub, tmp_path))  # fmt: skip
    assert online.returncode == 0, online.stderr[-3000:]
    assert "Hugging Face hub duotune/tiny-llama (hub: hf:// prefix" in online.stdout
    before = len(hub.requests)
    offline = run_cli("train", "--model", REPO, *common, f"output_dir={tmp_path}/b", cwd=tmp_path,
                      env=_env(hub, tmp_path, HF_HUB_OFFLINE="1"))  # fmt: skip
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert len(hub.requests) == before  # not one request


def test_offline_without_the_model_cached_says_how_out(hub, tmp_path):
    proc = run_cli("duotune", "download", "org/absent", env=_env(hub, tmp_path, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "Hugging Face model org/absent is not in the local cache and HF_HUB_OFFLINE=1" in line
    assert (
        "duotune download" in line and "HF_ENDPOINT=https://hf-mirror.com" in line and "local folder" in line
    )
    assert hub.requests == []


def test_private_repo_needs_the_token_which_is_never_written(hub, model_repo, tmp_path):
    hub.add_repo(REPO, model_repo, token=TOKEN)
    args = [
        "train",
        "--device",
        "cpu",
        "--model",
        REPO,
        "max_steps=1",
        "max_samples=4",
        f"output_dir={tmp_path}/out",
    ]
    denied = run_cli(*args, cwd=tmp_path, env=_env(hub, tmp_path))
    assert denied.returncode == 2
    assert (
        "Hugging Face has no public model duotune/tiny-llama" in denied.stderr and "HF_TOKEN" in denied.stderr
    )
    assert not (tmp_path / "out").exists()
    ok = run_cli(*args, cwd=tmp_path, env=_env(hub, tmp_path, HF_TOKEN=TOKEN))
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert any(h.get("authorization") == f"Bearer {TOKEN}" for _, _, h in hub.requests)
    assert_secret_nowhere(TOKEN, tmp_path / "out", ok.stdout, ok.stderr)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["unknown", "bad_revision", "unreachable"])
def test_download_errors_are_one_line(hub, model_repo, tmp_path, case):
    hub.add_repo(REPO, model_repo)
    env = _env(hub, tmp_path)
    args = ["duotune", "download", REPO]
    if case == "unknown":
        args[2] = "org/nothing-here"
    elif case == "bad_revision":
        args += ["--revision", "v9"]
    else:
        env["HF_ENDPOINT"] = f"http://127.0.0.1:{_closed_port()}"
    proc = run_cli(*args, env=env)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    expected = {
        "unknown": "Hugging Face has no public model org/nothing-here",
        "bad_revision": "has no revision v9",
        "unreachable": "cannot reach http://127.0.0.1:",
    }[case]
    assert expected in errors[0]


def test_an_interrupted_download_never_looks_complete(hub, model_repo, tmp_path):
    hub.add_repo(REPO, model_repo)
    size = (model_repo / "model.safetensors").stat().st_size
    hub.fail_once("model.safetensors", after_bytes=size // 3)
    target = tmp_path / "local"
    env = _env(hub, tmp_path)
    first = run_cli("duotune", "download", REPO, "--local-dir", str(target), env=env)
    if first.returncode != 0:  # huggingface_hub 0.x stops; 1.x+ resumes within the call
        assert first.returncode == 2 and "Traceback" not in first.stderr
        assert not (target / ".duotune-download.json").exists()
        assert not (target / "model.safetensors").exists()  # the partial file keeps a temporary name
        refused = run_cli("train", "--device", "cpu", "--model", str(target), f"output_dir={tmp_path}/o",
                          cwd=tmp_path)  # fmt: skip
        assert refused.returncode == 2 and "no weights" in refused.stderr
        first = run_cli("duotune", "download", REPO, "--local-dir", str(target), env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert (target / ".duotune-download.json").is_file()
    assert (target / "model.safetensors").read_bytes() == (model_repo / "model.safetensors").read_bytes()


def _tiny_tmpfs(path: Path) -> bool:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


def test_a_full_disk_is_one_line_and_leaves_no_complete_looking_file(hub, model_repo, tmp_path):
    small = tmp_path / "small"
    if not _tiny_tmpfs(small):
        pytest.skip("needs permission to mount a small tmpfs (root); the message itself is tested above")
    try:
        hub.add_repo(REPO, model_repo)
        proc = run_cli("duotune", "download", REPO, "--cache-dir", str(small), env=_env(hub, tmp_path))
        assert proc.returncode == 2
        assert (
            "disk full while downloading duotune/tiny-llama" in proc.stderr and "Traceback" not in proc.stderr
        )
        assert not list(small.rglob("model.safetensors"))
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
