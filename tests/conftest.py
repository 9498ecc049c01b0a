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


# torch_npu's fused operators, implemented in plain torch from their documented semantics (appended to the
# stand-in above); every call is recorded in ``calls`` so tests can tell that a fused path really ran.
FAKE_TORCH_NPU_OPS = """

def npu_rms_norm(self, gamma, epsilon=1e-06):
    # y = x * rsqrt(mean(x^2) + eps) * gamma, computed in fp32; second output rstd = 1 / rms(x)
    _record("npu_rms_norm", tuple(self.shape), epsilon=epsilon)
    x = self.float()
    rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + epsilon)
    return gamma * (x * rstd).to(self.dtype), rstd


def npu_rotary_mul(input, r1, r2, rotary_mode="half"):
    # "half": x1, x2 = chunk(x, 2, -1); output = r1 * x + r2 * cat(-x2, x1); 4-D tensors only
    _record("npu_rotary_mul", tuple(input.shape), rotary_mode=rotary_mode)
    assert input.dim() == 4 and r1.dim() == 4 and r2.dim() == 4 and rotary_mode == "half"
    x1, x2 = torch.chunk(input, 2, -1)
    return r1 * input + r2 * torch.cat((-x2, x1), dim=-1)


def npu_swiglu(input, dim=-1):
    # A, B = the two halves of input along dim; output = silu(A) * B
    _record("npu_swiglu", tuple(input.shape), dim=dim)
    a, b = torch.chunk(input, 2, dim=dim)
    return torch.nn.functional.silu(a) * b


def npu_fusion_attention(query, key, value, head_num, input_layout, pse=None, padding_mask=None,
                         atten_mask=None, scale=1.0, keep_prob=1.0, pre_tockens=2147483647,
                         next_tockens=2147483647, inner_precise=0, prefix=None, actual_seq_qlen=None,
                         actual_seq_kvlen=None, sparse_mode=0, gen_mask_parallel=True, sync=False):
    # Only what duotune uses: layout TND (tokens, heads, head_dim) with actual_seq_qlen/actual_seq_kvlen the
    # cumulative ends of the sequences, sparse_mode 3 (right-down causal) with the compressed 2048 x 2048
    # bool mask (True = masked). Key/value may have fewer heads (N1 a multiple of N2). Seven outputs.
    _record("npu_fusion_attention", input_layout=input_layout, sparse_mode=sparse_mode,
            actual_seq_qlen=list(actual_seq_qlen), actual_seq_kvlen=list(actual_seq_kvlen))
    assert input_layout == "TND" and sparse_mode == 3 and pse is None and padding_mask is None
    assert atten_mask is not None and atten_mask.dtype == torch.bool and tuple(atten_mask.shape) == (2048, 2048)
    assert bool(atten_mask[0, 1]) and not bool(atten_mask[1, 0])
    assert query.dim() == 3 and query.shape[1] == head_num and head_num % key.shape[1] == 0
    assert list(actual_seq_qlen)[-1] == query.shape[0] and list(actual_seq_kvlen)[-1] == key.shape[0]
    groups = head_num // key.shape[1]
    outputs, q_start, kv_start = [], 0, 0
    for q_end, kv_end in zip(actual_seq_qlen, actual_seq_kvlen):
        q = query[q_start:q_end].transpose(0, 1)
        k = key[kv_start:kv_end].transpose(0, 1).repeat_interleave(groups, dim=0)
        v = value[kv_start:kv_end].transpose(0, 1).repeat_interleave(groups, dim=0)
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale
        lq, lk = q.shape[1], k.shape[1]
        future = torch.ones(lq, lk, dtype=torch.bool).triu(1 + lk - lq)
        scores = scores.masked_fill(future, float("-inf"))
        weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        weights = torch.nn.functional.dropout(weights, p=1.0 - keep_prob, training=keep_prob < 1.0)
        outputs.append(torch.matmul(weights, v).transpose(0, 1))
        q_start, kv_start = q_end, kv_end
    out = torch.cat(outputs, dim=0)
    return out, None, None, None, 0, 0, 0
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
        + FAKE_TORCH_NPU_OPS
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


# ---------------------------------------------------------------------------------------------------
# Tiny random causal LMs for the kernel tests (padding-free, packing, fused operators).

EXACT = 1e-5  # relative difference allowed between two computations of the same loss / gradient (fp32)
LENGTHS = [5, 17, 9, 30]


def tiny_model(attn: str = "sdpa", *, head_dim: int | None = None, model_type: str = "llama", seed: int = 0):
    """A random 2-layer fp32 causal LM with grouped-query attention (4 heads, 2 key/value heads; with
    ``head_dim`` 2 heads of that size and 1 key/value head)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    heads = 4 if head_dim is None else 2
    config = AutoConfig.for_model(
        model_type,
        vocab_size=128,
        hidden_size=64 if head_dim is None else heads * head_dim,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2,
        max_position_embeddings=256,
    )
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn).float()


def with_lora(model):
    """LoRA on all seven projections, with B drawn at random instead of zero so every LoRA weight gets a
    gradient."""
    import torch
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0)
    )
    generator = torch.Generator().manual_seed(1)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            with torch.no_grad():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return peft_model


def examples(lengths=LENGTHS, seed: int = 3) -> list[dict]:
    """Random token examples whose first third is a prompt (label -100)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(3, 128, (n,), generator=generator).tolist()
        out.append({"input_ids": ids, "labels": [-100 if i < n // 3 else t for i, t in enumerate(ids)]})
    return out


def loss_and_grads(model, batch):
    """The training loss of one batch and the gradient of every trainable weight."""
    model.zero_grad()
    model.train()
    loss = model(**batch).loss
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def assert_same(reference, other) -> None:
    """Same loss, and every gradient the same, to a relative EXACT (none of them zero)."""
    (ref_loss, ref_grads), (loss, grads) = reference, other
    assert abs(float(loss - ref_loss)) <= EXACT * abs(float(ref_loss)), (float(loss), float(ref_loss))
    assert ref_grads.keys() == grads.keys() and grads
    for name, g in grads.items():
        ref = ref_grads[name]
        assert ref.norm() > 0, name
        assert float((g - ref).norm() / ref.norm()) <= EXACT, name
