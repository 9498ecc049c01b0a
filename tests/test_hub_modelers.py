"""Models from the Modelers hub through the real openmind_hub client, against a local HTTPS stand-in
(tests/fake_modelers_hub.py), plus its offline cache and its errors."""

from __future__ import annotations

import pytest
from conftest import assert_secret_nowhere, run_cli
from fake_modelers_hub import FakeModelersHub

REPO = "duotune/tiny-llama"
TOKEN = "om-private-token-0123456789"


@pytest.fixture
def hub(tmp_path):
    with FakeModelersHub(tmp_path / "hub") as server:
        yield server


def _env(hub: FakeModelersHub, **extra) -> dict:
    return {**hub.env(), "OM_HUB_DISABLE_PROGRESS_BARS": "1", "MODELERS_TOKEN": "", **extra}


def _fetched(hub: FakeModelersHub) -> list[str]:
    return [path.split("/media/", 1)[1] for method, path, _ in hub.requests if "/media/" in path]


def test_download_fetches_only_what_loading_needs_into_the_modelers_cache(hub, model_repo, tmp_path):
    hub.add_repo(REPO, model_repo)
    cache = tmp_path / "om-cache"
    proc = run_cli("duotune", "download", f"modelers://{REPO}", "--cache-dir", str(cache), env=_env(hub))
    assert proc.returncode == 0, proc.stderr[-2000:]
    fetched = _fetched(hub)
    assert "model.safetensors" in fetched and "config.json" in fetched and "tokenizer.json" in fetched
    assert "modeling_custom.py" not in fetched and "training_args.bin" not in fetched
    snapshot = next((cache / "models--duotune--tiny-llama" / "snapshots").iterdir())
    assert str(snapshot) in proc.stdout
    proc = run_cli("duotune", "download", f"modelers://{REPO}", "--cache-dir", str(tmp_path / "c2"),
                   "--trust-remote-code", env=_env(hub))  # fmt: skip
    assert proc.returncode == 0 and "modeling_custom.py" in _fetched(hub)


def test_train_from_modelers_then_offline_without_a_single_request(hub, model_repo, tmp_path):
    hub.add_repo(REPO, model_repo)
    cache = tmp_path / "om-cache"
    common = [
        "--device",
        "cpu",
        "max_steps=1",
        "max_samples=4",
        "report_to=none",
        f"cache_dir={cache}",
        "hub=modelers",
    ]
    online = run_cli(
        "train", "--model", REPO, *common, f"output_dir={tmp_path}/a", cwd=tmp_path, env=_env(hub)
    )
    assert online.returncode == 0, online.stderr[-3000:]
    assert "Modelers hub duotune/tiny-llama (hub: recipe key hub" in online.stdout
    before = len(hub.requests)
    offline = run_cli("train", "--model", f"modelers://{REPO}", *common, f"output_dir={tmp_path}/b", cwd=tmp_path,
                      env=_env(hub, MODELERS_OFFLINE="1"))  # fmt: skip
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert "offline cache" in offline.stdout
    assert len(hub.requests) == before  # not one request


def test_offline_without_the_model_cached_says_how_out(hub, tmp_path):
    proc = run_cli("duotune", "download", "modelers://org/absent", "--cache-dir", str(tmp_path / "c"),
                   env=_env(hub, MODELERS_OFFLINE="1"))  # fmt: skip
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "Modelers model org/absent is not in the local cache" in line
    assert "MODELERS_OFFLINE=1" in line and "duotune download" in line and "local folder" in line
    assert hub.requests == []


def test_private_repo_needs_the_token_which_is_never_written(hub, model_repo, tmp_path):
    hub.add_repo(REPO, model_repo, token=TOKEN)
    args = ["train", "--device", "cpu", "--model", f"modelers://{REPO}", "max_steps=1", "max_samples=4",
            f"cache_dir={tmp_path}/c", f"output_dir={tmp_path}/out"]  # fmt: skip
    denied = run_cli(*args, cwd=tmp_path, env=_env(hub))
    assert denied.returncode == 2
    assert (
        "Modelers has no public model duotune/tiny-llama" in denied.stderr
        and "MODELERS_TOKEN" in denied.stderr
    )
    assert not (tmp_path / "out").exists()
    wrong = run_cli(*args, cwd=tmp_path, env=_env(hub, MODELERS_TOKEN="not-the-token"))
    assert wrong.returncode == 2 and "refused the token in MODELERS_TOKEN" in wrong.stderr
    ok = run_cli(*args, cwd=tmp_path, env=_env(hub, MODELERS_TOKEN=TOKEN))
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert any(h.get("authorization") == f"Bearer {TOKEN}" for _, _, h in hub.requests)
    assert_secret_nowhere(TOKEN, tmp_path / "out", ok.stdout, ok.stderr)


@pytest.mark.parametrize("case", ["unknown", "unreachable"])
def test_download_errors_are_one_line(hub, model_repo, tmp_path, case):
    hub.add_repo(REPO, model_repo)
    repo = "org/nothing-here" if case == "unknown" else REPO
    hub.unreachable = case == "unreachable"
    proc = run_cli(
        "duotune", "download", f"modelers://{repo}", "--cache-dir", str(tmp_path / "c"), env=_env(hub)
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    if case == "unknown":
        assert "Modelers has no public model org/nothing-here" in errors[0]
    else:
        assert "cannot reach" in errors[0] and "OPENMIND_HUB_ENDPOINT" in errors[0]


def test_local_dir_download_is_marked_complete_only_at_the_end(hub, model_repo, tmp_path):
    hub.add_repo(REPO, model_repo)
    target = tmp_path / "models" / "tiny"
    proc = run_cli("duotune", "download", f"modelers://{REPO}", "--local-dir", str(target), env=_env(hub))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (target / ".duotune-download.json").is_file() and (target / "model.safetensors").is_file()
    assert f"model_name_or_path={target}" in proc.stdout
    # the folder is a model of its own now
    train = run_cli("train", "--device", "cpu", "--model", str(target), "max_steps=1", "max_samples=4",
                    "report_to=none", f"output_dir={tmp_path}/out", cwd=tmp_path)  # fmt: skip
    assert train.returncode == 0, train.stderr[-2000:]
