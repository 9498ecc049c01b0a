"""Where a model comes from: a local folder, the Hugging Face hub or the Modelers hub.

``model_name_or_path`` is one of
  - a local folder (must hold config.json and the weights),
  - ``hf://ORG/NAME`` or ``modelers://ORG/NAME`` (the hub is explicit),
  - a bare ``ORG/NAME``: on the hub named by the recipe key ``hub``, else by ``$DUOTUNE_HUB``
    (``USE_OPENMIND_HUB=1`` also means Modelers, as in LLaMA-Factory), else Hugging Face,
  - ``demo://tiny-llama`` (the bundled demo, built locally).

A same-named model can be a different repo on each hub, so the hub a bare id means is decided here once
and said at the start of every run. Downloads go through each hub's own client (``huggingface_hub``,
``openmind_hub``) into that client's standard cache, with its progress bars, resumption of interrupted
files and offline mode. Only what loading needs is fetched: configs, tokenizer files, safetensors
weights; Python files only with ``trust_remote_code``; pickle weights (``*.bin``) only with
``allow_pickle_weights``. Tokens come from the environment (``HF_TOKEN``; ``MODELERS_TOKEN`` for
Modelers) and are passed to the clients only: never written, logged or tracked.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path

from duotune.trainer.common.errors import UserError, first_line
from duotune.trainer.common.files import atomic_write_text

__all__ = [
    "HUBS",
    "ModelSource",
    "ModelRef",
    "parse_model_spec",
    "default_hub",
    "fetch_model",
    "resolve_model",
    "check_model_folder",
    "cached_snapshot",
    "hub_token",
    "hub_offline",
]

HUBS = {"hf": "Hugging Face", "modelers": "Modelers"}
HUB_ENV = "DUOTUNE_HUB"
MODELERS_TOKEN_ENV = "MODELERS_TOKEN"
MODELERS_OFFLINE_ENV = "MODELERS_OFFLINE"

# What from_pretrained needs from a model repo (weights are added per the recipe's permissions).
LOAD_PATTERNS = [
    "*.json",  # config, generation config, tokenizer config, safetensors index, special tokens
    "*.safetensors",
    "*.model",  # sentencepiece
    "*.tiktoken",
    "*.txt",  # merges.txt, vocab.txt
    "*.jinja",  # chat templates saved by transformers 5
    "*.md",  # model card, license notes (small)
    "LICENSE*",
]
REMOTE_CODE_PATTERNS = ["*.py"]
PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth"]


@dataclass(frozen=True)
class ModelRef:
    spec: str  # as written
    kind: str  # "local" | "demo" | "hub"
    hub: str | None = None  # "hf" | "modelers" for kind == "hub"
    repo_id: str | None = None
    path: Path | None = None
    hub_why: str = ""

    def describe(self) -> str:
        if self.kind == "hub":
            return f"{HUBS[self.hub]} hub {self.repo_id}"
        return str(self.path or self.spec)


@dataclass(frozen=True)
class ModelSource:
    """A model ready for from_pretrained: ``path`` is always a local folder."""

    spec: str
    path: str
    description: str
    hub: str | None = None
    repo_id: str | None = None


def default_hub(recipe_hub: str | None) -> tuple[str, str]:
    """(hub for bare ORG/NAME ids, why)."""
    if recipe_hub in HUBS:
        return recipe_hub, "recipe key hub"
    env = os.environ.get(HUB_ENV, "").strip().lower()
    if env:
        if env not in HUBS:
            raise UserError(f"{HUB_ENV}={env!r}: use hf or modelers")
        return env, f"${HUB_ENV}"
    if os.environ.get("USE_OPENMIND_HUB", "").strip().lower() in ("1", "true", "yes"):
        return "modelers", "$USE_OPENMIND_HUB"
    return "hf", "default"


def looks_like_path(spec: str) -> bool:
    """A spec written as a file-system path (never a hub id)."""
    return spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1


def parse_model_spec(
    spec: str, recipe_hub: str | None = None, *, what: str = "model_name_or_path"
) -> ModelRef:
    """``what`` names where the spec came from in messages (the recipe key, or a command's argument)."""
    spec = spec.strip()
    if spec.startswith("demo://"):
        return ModelRef(spec, "demo")
    for scheme, hub in (("hf://", "hf"), ("modelers://", "modelers")):
        if spec.startswith(scheme):
            repo = spec[len(scheme) :].strip("/")
            _check_repo_id(spec, repo, hub, what)
            return ModelRef(spec, "hub", hub, repo, hub_why=f"{scheme} prefix")
    local = Path(spec).expanduser()
    if local.exists():
        return ModelRef(spec, "local", path=local.resolve())
    if looks_like_path(spec):
        raise UserError(
            f"{what} {spec!r}: no such folder (and not a hub id: those look like ORG/NAME, "
            "hf://ORG/NAME or modelers://ORG/NAME)"
        )
    hub, why = default_hub(recipe_hub)
    _check_repo_id(spec, spec, hub, what)
    return ModelRef(spec, "hub", hub, spec, hub_why=why)


def _check_repo_id(spec: str, repo: str, hub: str, what: str = "model_name_or_path") -> None:
    parts = repo.split("/")
    ok = all(p and all(c.isalnum() or c in "-_." for c in p) for p in parts) and len(parts) in (1, 2)
    if hub == "modelers" and len(parts) != 2:
        ok = False
    if not ok:
        raise UserError(f"{what} {spec!r}: {repo!r} is not a valid {HUBS[hub]} repo id (ORG/NAME)")


def hub_token(hub: str) -> str | None:
    """The token for a hub, from the environment only (HF's client also finds a saved login itself)."""
    if hub == "modelers":
        return os.environ.get(MODELERS_TOKEN_ENV) or None
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def hub_offline(hub: str) -> bool:
    names = (
        ("HF_HUB_OFFLINE",) if hub == "hf" else (MODELERS_OFFLINE_ENV, "OPENMIND_HUB_OFFLINE", "HUB_OFFLINE")
    )
    return any(os.environ.get(n, "").strip().lower() in ("1", "true", "yes", "on") for n in names)


def _endpoint(hub: str) -> str:
    if hub == "hf":
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return os.environ.get("OPENMIND_HUB_ENDPOINT", "https://modelers.cn")


def _offline_var(hub: str) -> str:
    return "HF_HUB_OFFLINE=1" if hub == "hf" else f"{MODELERS_OFFLINE_ENV}=1"


def _mirror_hint(hub: str) -> str:
    if hub == "hf":
        return "a mirror (HF_ENDPOINT=https://hf-mirror.com)"
    return "another endpoint (OPENMIND_HUB_ENDPOINT=https://...)"


def _names(e: BaseException) -> set[str]:
    return {c.__name__ for c in type(e).__mro__}


def _explain(e: BaseException, ref: ModelRef, offline: bool, target: str, revision: str | None = None) -> str:
    """One line for a failed download."""
    hub, repo = HUBS[ref.hub], ref.repo_id
    names = _names(e)
    token_var = "HF_TOKEN" if ref.hub == "hf" else MODELERS_TOKEN_ENV
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return f"disk full while downloading {repo} from {hub} into {target}; free space or set cache_dir elsewhere"
    if offline:  # nothing may be downloaded: whatever failed, the cache does not hold the model
        return (
            f"{hub} model {repo} is not in the local cache and {_offline_var(ref.hub)} forbids downloading; "
            f"pre-download it with `duotune download {ref.spec}` where there is network (and copy the cache), "
            f"use {_mirror_hint(ref.hub)}, or point model_name_or_path at a local folder"
        )
    if "GatedRepoError" in names and ref.hub == "modelers":
        return f"Modelers refused the token in {token_var} (401) for {repo}; check the token"
    if "GatedRepoError" in names:
        return f"{hub} model {repo} is gated: accept its terms on the hub, then set {token_var}"
    text = str(e)
    if isinstance(e, ValueError) and "Access denied" in text:
        return (
            f"openmind_hub writes only below /tmp and your home folder, not to {target}; set "
            f"HUB_WHITE_LIST_PATHS={target} (before starting) or choose another cache_dir"
        )
    if isinstance(e, ValueError) and "white list" in text:
        return "OPENMIND_HUB_ENDPOINT must be an https URL on a Modelers domain (e.g. https://modelers.cn)"
    if "RevisionNotFoundError" in names:
        return f"{hub} model {repo} has no revision {revision or 'main'}; check `revision`"
    if "RepositoryNotFoundError" in names or _status(e) in (401, 403, 404):
        if hub_token(ref.hub):
            return f"{hub} has no model {repo} that your {token_var} can read; check the id and the token's access"
        return (
            f"{hub} has no public model {repo}: check the id, or if it is private set {token_var} to a token "
            "that can read it"
        )
    if names & {
        "ConnectionError",
        "ConnectError",
        "ConnectTimeout",
        "Timeout",
        "TimeoutException",
        "NetworkError",
    } or ("LocalEntryNotFoundError" in names):
        return (
            f"cannot reach {_endpoint(ref.hub)} to download {repo} ({type(e).__name__}); check the network, use "
            f"{_mirror_hint(ref.hub)}, or pre-download with `duotune download` and run with {_offline_var(ref.hub)}"
        )
    if "EntryNotFoundError" in names:
        return f"{hub} model {repo} lacks a file loading needs ({first_line(e)})"
    return f"downloading {repo} from {hub} failed: {type(e).__name__}: {first_line(e)}"


def _status(e: BaseException) -> int | None:
    response = getattr(e, "response", None)
    return getattr(response, "status_code", None)


def fetch_model(
    ref: ModelRef,
    *,
    revision: str | None = None,
    cache_dir: str | None = None,
    local_dir: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle_weights: bool = False,
) -> Path:
    """Download (or find in the cache) what loading ``ref`` needs; return the local folder."""
    assert ref.kind == "hub" and ref.hub and ref.repo_id
    patterns = list(LOAD_PATTERNS)
    if trust_remote_code:
        patterns += REMOTE_CODE_PATTERNS
    if allow_pickle_weights:
        patterns += PICKLE_PATTERNS
    offline = hub_offline(ref.hub)
    kwargs = dict(
        revision=revision,
        cache_dir=cache_dir,
        local_dir=local_dir,
        allow_patterns=patterns,
        token=hub_token(ref.hub),
        local_files_only=offline,
    )
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    target = local_dir or cache_dir or ("the Hugging Face cache" if ref.hub == "hf" else "the Modelers cache")
    if ref.hub == "modelers" and offline:
        # openmind_hub asks the hub whether the repo exists even with local_files_only=True, so offline
        # Modelers models are looked up in its cache here, without the client
        folder = _modelers_cached_snapshot(ref.repo_id, revision, cache_dir, local_dir)
        if folder is None:
            raise UserError(_explain(FileNotFoundError("not cached"), ref, True, str(target)))
        check_model_folder(
            folder, ref.spec, allow_pickle_weights=allow_pickle_weights, trust_remote_code=trust_remote_code
        )
        return folder
    if local_dir:
        _clear_marker(Path(local_dir))
    try:
        if ref.hub == "hf":
            from huggingface_hub import snapshot_download
        else:
            from openmind_hub import snapshot_download
        folder = Path(snapshot_download(ref.repo_id, **kwargs))
    except KeyboardInterrupt:
        raise
    except Exception as e:
        if isinstance(e, (ImportError, TypeError, AttributeError, NameError, AssertionError)):
            raise  # our bug or a broken install, not a download problem: keep the traceback
        if isinstance(e, RuntimeError) and e.__cause__ is not None:
            e = e.__cause__  # openmind_hub >= 1.3 wraps the real error after retrying
        raise UserError(_explain(e, ref, offline, str(target), revision)) from None
    check_model_folder(
        folder, ref.spec, allow_pickle_weights=allow_pickle_weights, trust_remote_code=trust_remote_code
    )
    if local_dir:
        _write_marker(folder, ref, revision)
    return folder


def _modelers_cached_snapshot(
    repo_id: str, revision: str | None, cache_dir: str | None, local_dir: str | None
):
    """The snapshot folder openmind_hub made for repo_id at revision, if it is in the cache."""
    if local_dir:
        folder = Path(local_dir)
        return folder if (folder / COMPLETE_MARKER).is_file() else None
    if cache_dir is None:
        try:
            from openmind_hub.plugins.openmind.constants import OM_HUB_CACHE as cache_dir
        except ImportError:  # pragma: no cover - layout of other versions
            base = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
            cache_dir = os.path.join(base, "openmind", "hub")
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    rev = revision or "main"
    ref_file = repo / "refs" / rev
    sha = ref_file.read_text().strip() if ref_file.is_file() else rev
    folder = repo / "snapshots" / sha
    return folder if folder.is_dir() else None


def cached_snapshot(
    ref: ModelRef, *, revision: str | None = None, cache_dir: str | None = None
) -> Path | None:
    """The folder of ``ref`` in its hub's local cache when it is there (config.json present), else None.
    Asks no server: what a run would find with the hub's offline switch on."""
    assert ref.kind == "hub" and ref.hub and ref.repo_id
    if ref.hub == "modelers":
        folder = _modelers_cached_snapshot(ref.repo_id, revision, cache_dir, None)
        return folder if folder is not None and (folder / "config.json").is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(ref.repo_id, "config.json", cache_dir=cache_dir, revision=revision)
    return Path(found).parent if isinstance(found, str) else None


COMPLETE_MARKER = ".duotune-download.json"


def _clear_marker(folder: Path) -> None:
    (folder / COMPLETE_MARKER).unlink(missing_ok=True)


def _write_marker(folder: Path, ref: ModelRef, revision: str | None) -> None:
    """A --local-dir download is complete only once this file exists (written last)."""
    data = {"hub": ref.hub, "repo_id": ref.repo_id, "revision": revision or "main"}
    atomic_write_text(folder / COMPLETE_MARKER, json.dumps(data) + "\n")


def check_model_folder(
    folder: Path,
    spec: str,
    *,
    allow_pickle_weights: bool = False,
    trust_remote_code: bool = False,
    what: str = "model_name_or_path",
) -> None:
    """Refuse a folder that is not a loadable model: no config or a damaged one, no weights, missing or
    damaged shards, or pickle weights the recipe did not allow. Only headers are read (fast on 7B)."""
    from duotune.trainer.model.checks import check_model_config, check_weights

    if not folder.is_dir():
        raise UserError(f"{what} {spec!r}: {folder} is not a folder")
    if not (folder / "config.json").exists():
        raise UserError(
            f"{what} {spec!r}: {folder} is not a model folder (no config.json); point it at the "
            "folder that holds config.json, the weights and the tokenizer"
        )
    check_model_config(folder, trust_remote_code=trust_remote_code)
    index = folder / "model.safetensors.index.json"
    if index.is_file() or any(folder.glob("*.safetensors")):
        check_weights(folder)
        return
    pickles = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth")]
    if pickles and not allow_pickle_weights:
        raise UserError(
            f"model {spec!r} has only pickle weights ({pickles[0]}), which can run code when loaded; convert it "
            "to safetensors, or set allow_pickle_weights: true if you trust its source"
        )
    if not pickles:
        raise UserError(
            f"model {spec!r}: no weights (*.safetensors) in {folder}; the download may be incomplete"
        )


def resolve_model(
    spec: str,
    *,
    hub: str | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle_weights: bool = False,
) -> ModelSource:
    """Turn ``model_name_or_path`` into a local folder, downloading it if needed."""
    from duotune.trainer.demo import demo_model_path

    ref = parse_model_spec(spec, hub)
    if ref.kind == "demo":
        path = demo_model_path(spec)
        return ModelSource(spec, str(path), f"{spec} (bundled demo, built at {path})")
    if ref.kind == "local":
        check_model_folder(
            ref.path, spec, allow_pickle_weights=allow_pickle_weights, trust_remote_code=trust_remote_code
        )
        return ModelSource(spec, str(ref.path), f"local folder {ref.path}")
    folder = fetch_model(
        ref,
        revision=revision,
        cache_dir=cache_dir,
        trust_remote_code=trust_remote_code,
        allow_pickle_weights=allow_pickle_weights,
    )
    rev = f"@{revision}" if revision else ""
    return ModelSource(
        spec,
        str(folder),
        f"{ref.describe()}{rev} (hub: {ref.hub_why}; {'offline cache' if hub_offline(ref.hub) else 'cached at'} {folder})",
        hub=ref.hub,
        repo_id=ref.repo_id,
    )
