"""Shared test set-up: isolated caches, tiny tokenizers built in code, and a runner for the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def pytest_collection_modifyitems(config, items):
    """Tests marked `openmind` need the openMind stack (scripts/setup_openmind_env.sh)."""
    import importlib.util

    if importlib.util.find_spec("openmind") is not None:
        return
    skip = pytest.mark.skip(
        reason="needs the openMind stack: run in the venv of scripts/setup_openmind_env.sh"
    )
    for item in items:
        if "openmind" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory):
    """Every test (and every CLI it starts) uses caches of this session only and no network."""
    root = tmp_path_factory.mktemp("env")
    shared_cache = os.environ.get("DUOTUNE_TEST_CACHE")  # lets CI reuse one demo build across legs
    values = {
        "DUOTUNE_CACHE": shared_cache or str(root / "duotune-cache"),
        "HF_DATASETS_CACHE": str(root / "datasets-cache"),
        "HF_HOME": str(root / "hf-home"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "SWANLAB_ROOT": str(root / "swanlab-home"),
        "MPLBACKEND": "Agg",
    }
    old = {k: os.environ.get(k) for k in [*values, "SWANLAB_API_KEY", "SWANLAB_MODE"]}
    os.environ.update(values)
    os.environ.pop("SWANLAB_API_KEY", None)
    os.environ.pop("SWANLAB_MODE", None)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


PACE = Path(__file__).resolve().parent / "support" / "pace"


def paced(env: dict | None = None, *, step_seconds: float = 0.0, hold: Path | None = None) -> dict:
    """An environment whose train processes pace their steps (tests/support/pace/sitecustomize.py): sleep
    ``step_seconds`` before each step, or wait while the file ``hold`` exists. Tests that act while a run
    is going use it, so that a fast machine cannot finish the run first."""
    out = dict(os.environ if env is None else env)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACE), out.get("PYTHONPATH", "")) if p)
    if step_seconds:
        out["DUOTUNE_TEST_STEP_SECONDS"] = str(step_seconds)
    if hold is not None:
        out["DUOTUNE_TEST_HOLD"] = str(hold)
    return out


def run_cli(
    *args: str,
    cwd: Path | str | None = None,
    env: dict | None = None,
    timeout: int = 600,
    input_text: str | None = None,
):
    """Run a console script (train / duotune) of this environment in a subprocess."""
    script, *rest = args
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [str(BIN / script), *rest],
        cwd=str(cwd) if cwd else None,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
    )


def write_repo(root: Path, files: dict[str, bytes]) -> Path:
    """Write a folder of files (names may hold subfolders) standing in for a hub repo."""
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def assert_secret_nowhere(secret: str, folder: Path, *outputs: str) -> None:
    """The secret is in no file under ``folder`` and in none of the given outputs (stdout, stderr)."""
    for text in outputs:
        assert secret not in text
    for path in folder.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------------
# A word-level tokenizer whose ids the tests spell out literally.

WORDS = [
    "<unk>",  # 0
    "<s>",  # 1
    "</s>",  # 2
    "<|im_start|>",  # 3
    "<|im_end|>",  # 4
    "\n\n",  # 5
    "\n",  # 6
    "User",  # 7
    "Assistant",  # 8
    ":",  # 9
    "calm",  # 10
    " hi",  # 11
    " hello",  # 12
    " there",  # 13
    " sad",  # 14
    " I",  # 15
    " hear",  # 16
    " you",  # 17
    "hi",  # 18
    "hello",  # 19
    "sad",  # 20
    "I",  # 21
    "user",  # 22
    "assistant",  # 23
    "system",  # 24
    ": ",  # 25
    " ",  # 26
]
VOCAB = {w: i for i, w in enumerate(WORDS)}


def word_tokenizer(chat_template: str | None = None, *, pad: bool = False):
    """A fast tokenizer over WORDS: a GPT-2-like split (a leading space stays on the word after it)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r" ?[A-Za-z]+| ?[^\sA-Za-z]+|\s+"), behavior="isolated")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>" if pad else None,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = chat_template
    return fast


@pytest.fixture(scope="session")
def demo_model_dir():
    from duotune.trainer.demo import demo_model_path

    return demo_model_path("demo://tiny-llama")


@pytest.fixture
def model_repo(demo_model_dir, tmp_path) -> Path:
    """The demo model as a hub repo, with files loading must not fetch unless allowed."""
    repo = tmp_path / "repo"
    shutil.copytree(demo_model_dir, repo)
    (repo / "modeling_custom.py").write_text("raise RuntimeError('remote code ran')\n")
    (repo / "training_args.bin").write_bytes(b"\x80\x04pickled")
    return repo


@pytest.fixture(scope="session")
def demo_tokenizer(demo_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(demo_model_dir))


# ---------------------------------------------------------------------------------------------------
# A stand-in torch_npu. No Ascend hardware is reachable, so NPU code is tested against a module with
# torch_npu's documented surface: ``import torch_npu`` registers ``torch.npu`` (is_available,
# device_count, is_bf16_supported, set_device, current_device, get_device_name, memory statistics,
# empty_cache), ``torch_npu.npu.set_compile_mode(jit_compile=...)`` and ``is_jit_compile_false()``,
# ``torch_npu.utils.get_cann_version(module="CANN")`` and ``torch_npu.__version__``.

FAKE_TORCH_NPU = """
import os
import types
import torch

if {marker!r}:
    open({marker!r}, "w").write("imported")
if {broken!r}:
    raise OSError({broken!r})

__version__ = {version!r} or (torch.__version__.split("+")[0] + ".post1")
calls = []


def _record(name, *args, **kwargs):
    calls.append((name, args, kwargs))


npu = types.ModuleType("torch_npu.npu")
npu.is_available = lambda: {count} > 0
npu.device_count = lambda: {count}
npu.is_bf16_supported = lambda: {bf16}
npu.set_device = lambda device: _record("set_device", device)
npu.current_device = lambda: 0
npu.get_device_name = lambda device=None: {name!r}
npu.max_memory_allocated = lambda device=None: 3 * 2**30
npu.memory_allocated = lambda device=None: 2**30
npu.memory_reserved = lambda device=None: 4 * 2**30
npu.empty_cache = lambda: _record("empty_cache")
_jit = {{"on": True}}


def set_compile_mode(jit_compile=True):
    _record("set_compile_mode", jit_compile=jit_compile)
    _jit["on"] = jit_compile


npu.set_compile_mode = set_compile_mode
npu.is_jit_compile_false = lambda: not _jit["on"]
utils = types.ModuleType("torch_npu.utils")
utils.get_cann_version = lambda module="CANN": {cann!r} if module == "CANN" else ""
torch.npu = npu
"""


def write_fake_torch_npu(
    root: Path,
    *,
    bf16: bool = True,
    count: int = 8,
    version: str | None = None,
    broken: str | None = None,
    marker: str | None = None,
    name: str = "Ascend910B2",
    cann: str = "8.1.RC1",
) -> Path:
    """Write a torch_npu package under root and return the folder to put on sys.path."""
    pkg = root / "torch_npu"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(
        FAKE_TORCH_NPU.format(
            bf16=bf16, count=count, version=version, broken=broken, marker=marker, name=name, cann=cann
        )
    )
    return root


@pytest.fixture
def fake_npu_path(monkeypatch, tmp_path):
    """Returns a function that installs a stand-in torch_npu (see write_fake_torch_npu) for this test."""
    import torch

    def install(**kwargs):
        root = write_fake_torch_npu(tmp_path / f"fake{len(installed)}", **kwargs)
        sys.modules.pop("torch_npu", None)
        monkeypatch.syspath_prepend(str(root))
        import importlib

        importlib.invalidate_caches()
        installed.append(root)
        return root

    installed: list[Path] = []
    had_npu = hasattr(torch, "npu")
    saved = sys.modules.get("torch_npu", "absent")
    sys.modules.pop("torch_npu", None)
    yield install
    if "torch_npu" in sys.modules:
        del sys.modules["torch_npu"]
    if saved != "absent":
        sys.modules["torch_npu"] = saved
    if not had_npu and hasattr(torch, "npu"):
        delattr(torch, "npu")


@pytest.fixture
def no_torch_npu_block():
    """Undo keep_torch_npu_out() after a test that selected a non-NPU backend in this process."""
    yield
    if "torch_npu" in sys.modules and sys.modules["torch_npu"] is None:
        del sys.modules["torch_npu"]
