"""Huawei Ascend NPU through torch_npu (the Ascend Extension for PyTorch) and CANN.

Facts this module follows (torch_npu's documented API):
- ``import torch_npu`` registers ``torch.npu``; devices are ``npu:{LOCAL_RANK}``; the runtime honours
  ``ASCEND_RT_VISIBLE_DEVICES``; the collective backend is ``hccl``.
- ``torch_npu.npu.set_compile_mode(jit_compile=False)`` selects the precompiled binary kernels, the right
  default for the dynamic shapes of chat data (JIT compilation was reported ~10x slower on a 910A). The
  recipe key ``npu_jit_compile: true`` or ``DUOTUNE_NPU_JIT_COMPILE=1`` switches JIT on.
- bf16 only where ``torch.npu.is_bf16_supported()`` (910B yes; 910A and 310P no): fp16 otherwise.
- torch_npu's version must equal torch's. Importing it where CANN is missing raises arbitrary errors, so
  it is located with ``find_spec`` first, imported inside ``except Exception``, and only ever imported
  when the NPU is requested or probed.
- Padding-free batches run on ``torch_npu.npu_fusion_attention(query, key, value, head_num, "TND", ...,
  atten_mask=<2048x2048 upper-triangular bool>, scale=..., keep_prob=..., sparse_mode=3,
  actual_seq_qlen=<cumulative example ends>, actual_seq_kvlen=<the same>)[0]``: the TND layout with
  per-example lengths and the right-down causal mode, so no token attends across examples.
- Fused operators (``npu_fused_ops``), each exactly the computation it replaces:
  ``torch_npu.npu_rms_norm(x, gamma, epsilon)[0]`` = x * rsqrt(mean(x^2) + eps) * gamma;
  ``torch_npu.npu_rotary_mul(x, r1, r2)`` = r1 * x + r2 * cat(-x2, x1) (x1, x2 the halves of the last
  dimension; "half" mode, documented for 4-D inputs with head_dim 128);
  ``torch_npu.npu_swiglu(x, dim=-1)`` = silu(a) * b for the halves a, b of x along dim.
- Multi-process runs: HCCL gives up on connecting after ``HCCL_CONNECT_TIMEOUT`` seconds (CANN: integer in
  [120, 7200], default 120) and on a collective after ``HCCL_EXEC_TIMEOUT`` (default 1800). Rank 0 alone
  loads and encodes the data while the others wait at the first collective, which on a large dataset
  takes longer than 120 s, so duotune raises both defaults (unless the user set them) and says so.
- Ascend users' most reported failure is a previous run's process still holding the NPUs: before a run
  starts, ``npu-smi info``'s process table is read and any other process on the chosen devices is named,
  with the command that frees it.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import types
from typing import Any

from .base import Availability, Backend, VarlenKernel, dist_version, torch_base_version

__all__ = [
    "FUSED_OPS_MODEL_TYPES",
    "HCCL_DEFAULTS",
    "JIT_ENV",
    "NpuBackend",
    "npu_processes",
    "package_versions",
    "probe_torch_npu",
    "torch_npu_install_hint",
    "undo_fused_rotary",
]

#: model types whose RMSNorm / rotary / SwiGLU npu_fused_ops replaces (DeepSeek-LLM chat models are Llamas)
FUSED_OPS_MODEL_TYPES = ("llama", "qwen2")

JIT_ENV = "DUOTUNE_NPU_JIT_COMPILE"
#: set for multi-process runs unless already in the environment (seconds; see the module docstring)
HCCL_DEFAULTS = {"HCCL_CONNECT_TIMEOUT": "1200", "HCCL_EXEC_TIMEOUT": "3600"}
# a row of npu-smi info's process table: | NPU  Chip | Process id | Process name | Process memory(MB) |
_PROCESS_ROW = re.compile(r"^\|\s*(\d+)\s+(\d+)\s*\|\s*(\d+)\s*\|\s*([^|]*?)\s*\|\s*(\d+)\s*\|\s*$")
CANN_HINT = (
    "install the CANN toolkit from https://www.hiascend.com/software/cann and run "
    "`source /usr/local/Ascend/ascend-toolkit/set_env.sh` before training"
)


def torch_npu_install_hint() -> str:
    base = torch_base_version()
    return f'pip install "torch-npu=={base}.*" (torch_npu must match torch {base})'


def probe_torch_npu() -> tuple[Any, str]:
    """Return (torch_npu module or None, reason). Imports torch_npu only if it is installed."""
    if "torch_npu" in sys.modules and sys.modules["torch_npu"] is None:
        return None, "torch_npu is disabled in this process (another device was chosen)"
    if importlib.util.find_spec("torch_npu") is None:
        return None, f"torch_npu is not installed; {torch_npu_install_hint()} and {CANN_HINT}"
    try:
        module = importlib.import_module("torch_npu")
    except Exception as e:  # missing CANN libraries surface as ImportError, OSError, RuntimeError...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return None, f"torch_npu is installed but fails to import ({type(e).__name__}: {first}); {CANN_HINT}"
    version = str(getattr(module, "__version__", "")).split("+", 1)[0]
    base = torch_base_version()
    release = re.match(r"\d+\.\d+\.\d+", version)
    if release and release.group(0) != base:
        return None, f"torch_npu {version} does not match torch {base}; {torch_npu_install_hint()}"
    return module, f"torch_npu {version or '(unknown version)'}"


class NpuBackend(Backend):
    name = "npu"
    device_type = "npu"
    dist_backend = "hccl"
    visible_devices_env = "ASCEND_RT_VISIBLE_DEVICES"
    supports_sharding = True
    prefers_openmind = True
    prefers_half_precision = True
    supports_fused_ops = True

    def __init__(self) -> None:
        self._module: Any = None
        self._avail: Availability | None = None

    @property
    def torch_npu(self):
        if self._module is None:
            self.availability()
        return self._module

    def availability(self) -> Availability:
        if self._avail is not None:
            return self._avail
        module, reason = probe_torch_npu()
        if module is None:
            self._avail = Availability(False, reason)
            return self._avail
        import torch

        npu = getattr(torch, "npu", None)
        if npu is None or not npu.is_available() or npu.device_count() == 0:
            visible = self.visible_devices()
            hint = f" (ASCEND_RT_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
            self._avail = Availability(
                False, f"{reason} is installed but no Ascend NPU is visible{hint}; check `npu-smi info`"
            )
            return self._avail
        self._module = module
        cann = cann_version(module)
        name = npu.get_device_name(0) if hasattr(npu, "get_device_name") else "Ascend NPU"
        self._avail = Availability(
            True, f"{npu.device_count()} x {name}, {reason}" + (f", CANN {cann}" if cann else "")
        )
        return self._avail

    def device_count(self) -> int:
        import torch

        return torch.npu.device_count() if self.is_available() else 0

    def _bf16(self) -> bool:
        import torch

        return bool(torch.npu.is_bf16_supported())

    def supports_precision(self, precision: str) -> Availability:
        if precision == "bf16" and not self._bf16():
            return Availability(
                False,
                "this Ascend NPU has no bf16 (910A and 310P lack it; 910B has it); use compute_type: fp16 or auto",
            )
        return Availability(True, "")

    def default_precision(self) -> tuple[str, str]:
        if self._bf16():
            return "bf16", "the NPU supports bf16"
        return "fp16", "this NPU has no bf16 (910A/310P), so fp16 with loss scaling"

    def attn_implementation(self, precision: str) -> tuple[str, str]:
        return "sdpa", "PyTorch SDPA on the NPU"

    def flash_attention(self, precision: str) -> tuple[str | None, str]:
        return "sdpa", (
            "on Ascend, padding-free batches call torch_npu.npu_fusion_attention directly and padded ones "
            "go through SDPA, which torch_npu runs on the same fused operator"
        )

    def varlen_kernel(self, attn_implementation: str) -> VarlenKernel | None:
        if attn_implementation == "eager":
            return None
        return VarlenKernel(
            "torch_npu.npu_fusion_attention (TND layout, actual_seq_qlen per example)",
            _npu_fusion_varlen(self.torch_npu),
        )

    def apply_fused_ops(self, model) -> tuple[list[str], str]:
        return _apply_fused_ops(self.torch_npu, model)

    def jit_compile_wanted(self, options: dict[str, Any] | None) -> bool:
        env = os.environ.get(JIT_ENV, "").strip().lower()
        if env in ("1", "true", "yes", "on"):
            return True
        if env in ("0", "false", "no", "off"):
            return False
        return bool((options or {}).get("npu_jit_compile", False))

    def setup(self, options: dict[str, Any] | None = None) -> list[str]:
        import torch

        module = self.torch_npu
        jit = self.jit_compile_wanted(options)
        module.npu.set_compile_mode(jit_compile=jit)
        torch.npu.set_device(self.device())
        return [
            "jit_compile on (JIT kernel compilation)"
            if jit
            else "jit_compile off (precompiled binary kernels; npu_jit_compile: true switches JIT on)"
        ]

    def preflight(self, world_size: int) -> list[str]:
        notes = []
        if world_size > 1:
            chosen = {k: v for k, v in HCCL_DEFAULTS.items() if k not in os.environ}
            os.environ.update(chosen)
            if chosen:
                notes.append(
                    "HCCL timeouts for a multi-process run: "
                    + ", ".join(f"{k}={v}" for k, v in chosen.items())
                    + " seconds (set them in the environment to choose others)"
                )
        if int(os.environ.get("LOCAL_RANK", "0")) == 0:
            notes += self._busy_device_notes()
        return notes

    def chosen_devices(self) -> list[int]:
        """npu-smi ids of the devices this run may use: ASCEND_RT_VISIBLE_DEVICES, else all of them."""
        visible = self.visible_devices()
        if visible:
            return [int(d) for d in visible.split(",") if d.strip().isdigit()]
        return list(range(self.device_count()))

    def _busy_device_notes(self) -> list[str]:
        mine = {os.getpid()}
        if "LOCAL_RANK" in os.environ:  # under torchrun: the launcher and the other workers are this run's
            mine |= {os.getppid()} | _children_of(os.getppid())
        chosen = set(self.chosen_devices())
        notes = []
        for npu, pid, name, memory in npu_processes():
            if npu in chosen and pid not in mine:
                what = f"{name}, " if name else ""
                notes.append(
                    f"NPU {npu} is in use by pid {pid} ({what}{memory} MB): if it is a finished run's "
                    f"leftover, free the device with `kill {pid}` (`kill -9 {pid}` if it hangs) and check "
                    "with `npu-smi info`; otherwise this run may run out of memory or hang in HCCL"
                )
        return notes

    def memory_stats(self) -> dict[str, int]:
        import torch

        return {
            "peak_allocated_bytes": int(torch.npu.max_memory_allocated()),
            "allocated_bytes": int(torch.npu.memory_allocated()),
            "reserved_bytes": int(torch.npu.memory_reserved()),
        }

    def empty_cache(self) -> None:
        import torch

        torch.npu.empty_cache()


def npu_processes(timeout: float = 20.0) -> list[tuple[int, int, str, int]]:
    """(npu id, pid, process name, memory in MB) of every process in ``npu-smi info``'s process table;
    empty when npu-smi is missing or fails (the check is advice, never a reason not to train)."""
    exe = shutil.which("npu-smi")
    if exe is None:
        return []
    try:
        proc = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if proc.returncode != 0:
        return []
    found = []
    for line in proc.stdout.splitlines():
        m = _PROCESS_ROW.match(line.strip())
        if m:
            found.append((int(m.group(1)), int(m.group(3)), m.group(4), int(m.group(5))))
    return found


def _children_of(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (the other workers of this torchrun), from /proc."""
    children = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return children
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and fields[1] == str(pid):
            children.add(int(entry))
    return children


# ------------------------------------------------------------------------------------- fused kernels


def _npu_fusion_varlen(torch_npu):
    """The VarlenKernel function on torch_npu.npu_fusion_attention (see the module docstring)."""
    import torch

    causal_masks: dict[Any, Any] = {}

    def attention(query, key, value, cu_seqlens, scale, dropout):
        # (1, heads, tokens, head_dim) -> TND: (tokens, heads, head_dim); key/value keep their own head count
        q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))
        mask = causal_masks.get(q.device)
        if mask is None:  # the compressed 2048 x 2048 mask sparse_mode 3 documents: True = masked out
            mask = torch.triu(torch.ones(2048, 2048, dtype=torch.bool, device=q.device), diagonal=1)
            causal_masks[q.device] = mask
        ends = [int(n) for n in cu_seqlens[1:].tolist()]  # cumulative lengths without the leading 0
        out = torch_npu.npu_fusion_attention(
            q,
            k,
            v,
            q.shape[1],
            "TND",
            atten_mask=mask,
            scale=scale,
            keep_prob=1.0 - dropout,
            sparse_mode=3,
            actual_seq_qlen=ends,
            actual_seq_kvlen=ends,
        )[0]
        return out.unsqueeze(0)

    return attention


_ORIGINAL_ROTARY: dict[str, Any] = {}


def _apply_fused_ops(torch_npu, model) -> tuple[list[str], str]:
    """RMSNorm and SwiGLU modules get fused forwards; the model family's rotary function a fused one."""
    import torch

    model_type = getattr(model.config, "model_type", None)
    if model_type not in FUSED_OPS_MODEL_TYPES:
        return [], f"npu_fused_ops covers Llama, Qwen2 and DeepSeek-LLM models, not {model_type}"
    norms = mlps = 0
    for module in model.modules():
        name = type(module).__name__
        if name.endswith("RMSNorm") and hasattr(module, "variance_epsilon") and hasattr(module, "weight"):
            module.forward = types.MethodType(_fused_rms_norm(torch_npu, type(module).forward), module)
            norms += 1
        elif name.endswith("MLP") and _is_swiglu_mlp(module, torch):
            module.forward = types.MethodType(_fused_swiglu(torch_npu), module)
            mlps += 1
    used = []
    if norms:
        used.append(f"npu_rms_norm x{norms}")
    if mlps:
        used.append(f"npu_swiglu x{mlps}")
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    family = sys.modules.get(type(model).__module__)
    note = ""
    if head_dim != 128:
        note = (
            f"rotary kept unfused: npu_rotary_mul is documented for head_dim 128, this model has {head_dim}"
        )
    elif family is None or not callable(getattr(family, "apply_rotary_pos_emb", None)):
        note = f"rotary kept unfused: {type(model).__module__} has no apply_rotary_pos_emb"
    else:
        original = _ORIGINAL_ROTARY.setdefault(family.__name__, family.apply_rotary_pos_emb)
        family.apply_rotary_pos_emb = _fused_rotary(torch_npu, original)
        used.append("npu_rotary_mul")
    return used, note


def undo_fused_rotary() -> None:
    """Put back the rotary functions _apply_fused_ops replaced (module-level: they outlive one model)."""
    for name, original in _ORIGINAL_ROTARY.items():
        if name in sys.modules:
            sys.modules[name].apply_rotary_pos_emb = original
    _ORIGINAL_ROTARY.clear()


def _is_swiglu_mlp(module, torch) -> bool:
    """gate/up/down projections with SiLU between them and no tensor-parallel slicing (Llama's MLP)."""
    if not all(hasattr(module, n) for n in ("gate_proj", "up_proj", "down_proj", "act_fn")):
        return False
    config = getattr(module, "config", None)
    if getattr(config, "pretraining_tp", 1) > 1:
        return False
    return isinstance(module.act_fn, torch.nn.SiLU) or type(module.act_fn).__name__ in (
        "SiLU",
        "SiLUActivation",
    )


def _fused_rms_norm(torch_npu, unfused):
    def forward(self, hidden_states):
        if self.weight.dtype != hidden_states.dtype:  # e.g. fp32 weights under autocast: keep its dtype rules
            return unfused(self, hidden_states)
        return torch_npu.npu_rms_norm(hidden_states, self.weight, epsilon=self.variance_epsilon)[0]

    return forward


def _fused_swiglu(torch_npu):
    import torch

    def forward(self, x):
        gate_up = torch.cat((self.gate_proj(x), self.up_proj(x)), dim=-1)
        return self.down_proj(torch_npu.npu_swiglu(gate_up, dim=-1))

    return forward


def _fused_rotary(torch_npu, original):
    signature = inspect.signature(original)

    def apply_rotary_pos_emb(q, k, cos, sin, *args, **kwargs):
        unsqueeze_dim = signature.bind(q, k, cos, sin, *args, **kwargs).arguments.get("unsqueeze_dim", 1)
        cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
        return torch_npu.npu_rotary_mul(q, cos, sin), torch_npu.npu_rotary_mul(k, cos, sin)

    return apply_rotary_pos_emb


def cann_version(module=None) -> str | None:
    """CANN version when it can be read (torch_npu >= 2.1 with CANN >= 8.1.RC1 reports it)."""
    if module is None:
        module = sys.modules.get("torch_npu")
    if module is None:
        return None
    for path in ("utils.get_cann_version", "npu.utils.get_cann_version"):
        obj: Any = module
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            value = obj(module="CANN")
        except Exception:
            continue
        if value:
            return str(value)
    import torch

    value = getattr(getattr(torch, "version", None), "cann", None)
    return str(value) if value else None


def package_versions() -> dict[str, str | None]:
    """Versions of the Ascend software for `duotune env` (read without importing torch_npu)."""
    return {"torch_npu": dist_version("torch-npu", "torch_npu"), "CANN": cann_version()}
