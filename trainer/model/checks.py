"""What a model or adapter folder must hold before anything loads it, checked by reading the files
ourselves (not by matching library messages, which differ between transformers/peft versions): a
config.json that is a JSON object naming a known architecture, safetensors files whose header and size
agree, tokenizer files that parse, and an adapter_config.json / adapter_model.safetensors that describe
a LoRA adapter. Each problem is one line naming the file.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from duotune.trainer.common.errors import UserError, first_line
from duotune.trainer.common.files import read_json, read_text

__all__ = [
    "check_adapter_folder",
    "check_model_config",
    "check_tokenizer_files",
    "check_weights",
    "loading_problems",
    "safetensors_shapes",
]

REDOWNLOAD = "download or copy the model again"
# bytes per element of the dtypes safetensors stores (sub-byte and unknown ones are not size-checked)
_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
_MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header
SIZE_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def safetensors_shapes(path: Path, hint: str = REDOWNLOAD) -> dict[str, list[int]]:
    """{tensor name: shape} from a safetensors header, after checking that the header is well-formed and
    that the tensors it describes exactly fill the file (a truncated download does not)."""

    def bad(reason: str) -> UserError:
        return UserError(f"{path} is not a valid safetensors file ({reason}); {hint}")

    if path.is_dir():
        raise UserError(f"{path} is a folder where a safetensors weights file should be; {hint}")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise bad(f"{size} bytes, shorter than a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, _MAX_HEADER):
                raise bad(f"its header claims {n} bytes, the file has {size}: truncated or not safetensors")
            raw = f.read(n)
    except OSError as e:
        raise UserError(f"{path} cannot be read: {e.strerror or e}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise bad("its header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    shapes: dict[str, list[int]] = {}
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, stop) = entry["dtype"], entry["shape"], entry["data_offsets"]
            ok = all(isinstance(d, int) and d >= 0 for d in shape) and 0 <= start <= stop
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise bad(f"tensor {name!r} has a malformed entry in the header")
        numel = 1
        for d in shape:
            numel *= d
        if dtype in _ITEMSIZE and stop - start != numel * _ITEMSIZE[dtype]:
            raise bad(f"tensor {name!r}: {stop - start} bytes for shape {shape} of {dtype}")
        shapes[name] = list(shape)
        end = max(end, stop)
    expected = 8 + n + end
    if expected != size:
        what = "truncated" if size < expected else "longer than its header says"
        raise bad(f"{what}: the header describes {expected} bytes, the file has {size}")
    return shapes


def check_model_config(folder: Path, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """config.json: a JSON object with a model_type this transformers knows (or remote code for it)."""
    path = folder / "config.json"
    config = read_json(path, "model config", hint=f"fix it or {REDOWNLOAD}")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise UserError(f"model config {path} names no model_type; {REDOWNLOAD}")
    for key in SIZE_KEYS:  # what every decoder builds its layers from: whole numbers, at least 1
        value = config.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise UserError(
                f"model config {path}: {key} must be a positive integer, got {value!r}; {REDOWNLOAD}"
            )
    generation = folder / "generation_config.json"
    if generation.exists():  # chat and eval stop on its eos_token_id; merge copies it
        read_json(generation, "generation config", hint=f"fix it or {REDOWNLOAD}")
    if config.get("auto_map") and trust_remote_code:
        return config  # the model's own code defines the architecture
    from transformers import __version__ as version
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model_type not in CONFIG_MAPPING_NAMES:
        remote = (
            " (or set trust_remote_code: true if the model ships its own code)"
            if config.get("auto_map")
            else ""
        )
        raise UserError(
            f"model config {path}: model_type {model_type!r} is not an architecture transformers {version} "
            f"knows; check the folder, or upgrade transformers{remote}"
        )
    return config


def weight_files(folder: Path) -> dict[str, Path]:
    """{tensor name: file} of a model folder's safetensors weights (sharded or not), checked."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        data = read_json(index, "safetensors index", hint=REDOWNLOAD)
        weight_map = data.get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise UserError(f"safetensors index {index} has no weight_map of tensor -> file; {REDOWNLOAD}")
        files = sorted(set(weight_map.values()))
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors"))
    missing = [name for name in files if not (folder / name).exists()]
    if missing:
        raise UserError(
            f"model {folder} is incomplete: {len(missing)} weight shard(s) missing ({', '.join(missing[:2])}"
            f"{', ...' if len(missing) > 2 else ''}); download it again (interrupted downloads resume)"
        )
    where: dict[str, Path] = {}
    for name in files:
        path = folder / name
        for tensor in safetensors_shapes(path):
            where[tensor] = path
    return where


def check_weights(folder: Path) -> None:
    """Every safetensors file of the folder is complete (headers and sizes only: fast on 7B models)."""
    weight_files(folder)


def shape_mismatches(
    folder: Path, *, trust_remote_code: bool = False
) -> list[tuple[str, list[int], list[int]]]:
    """(tensor, shape in the checkpoint, shape config.json makes) for every tensor whose shapes differ,
    from the safetensors headers and an empty (meta-device) model built from config.json."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    rng = torch.random.get_rng_state()  # building the model must not move the seeded generator
    try:
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    finally:
        torch.random.set_rng_state(rng)
    expected = {k: list(v.shape) for k, v in model.state_dict().items()}
    found: dict[str, list[int]] = {}
    for path in sorted(set(weight_files(folder).values())):
        found.update(safetensors_shapes(path))
    return [(k, found[k], expected[k]) for k in sorted(found) if k in expected and found[k] != expected[k]]


def loading_problems(info: dict[str, Any], folder: Path) -> str | None:
    """What transformers' loading info says is wrong, naming keys and the files that hold them, or None.

    A missing key would be initialised at random and trained on silently; an unexpected one means the
    weights belong to another model; a shape mismatch to another size of model."""
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    mismatched = sorted(info.get("mismatched_keys") or [], key=lambda m: m[0])
    if not (missing or unexpected or mismatched):
        return None
    try:
        files = weight_files(folder)
    except UserError:
        files = {}
    index, single = folder / "model.safetensors.index.json", folder / "model.safetensors"
    weights = (
        index if index.is_file() else single if single.is_file() else folder
    )  # (pickle weights: the folder)

    def listed(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    parts = []
    if mismatched:
        holder = files.get(mismatched[0][0], weights)
        shown = ", ".join(
            f"{key} {list(ckpt)} where config.json makes {list(model)}" for key, ckpt, model in mismatched[:2]
        )
        more = f" and {len(mismatched) - 2} more" if len(mismatched) > 2 else ""
        parts.append(f"{holder} holds tensors of other shapes ({shown}{more})")
    if missing:
        parts.append(f"{len(missing)} weights missing from {weights} ({listed(missing)})")
    if unexpected:
        holder = files.get(unexpected[0], weights)
        parts.append(f"{len(unexpected)} unexpected in {holder} ({listed(unexpected)})")
    return (
        f"the weights do not match {folder / 'config.json'}: "
        + "; ".join(parts)
        + ": these are the weights of "
        "another model (or a damaged copy), which would leave layers at random values; point at the right folder"
    )


def check_tokenizer_files(folder: Path, *, trust_remote_code: bool = False) -> None:
    """The tokenizer files present parse, one of them holds a vocabulary, and tokenizer_class is known."""
    hint = "fix it or copy the tokenizer files again"
    config_path = folder / "tokenizer_config.json"
    config = read_json(config_path, "tokenizer config", hint=hint) if config_path.exists() else {}
    for name in ("special_tokens_map.json", "added_tokens.json"):
        if (folder / name).exists():
            read_json(folder / name, "tokenizer file", hint=hint)
    tokenizer_json = folder / "tokenizer.json"
    if tokenizer_json.exists():
        text = read_text(tokenizer_json, "tokenizer file", hint)
        from tokenizers import Tokenizer

        try:
            Tokenizer.from_str(text)
        except Exception as e:  # the tokenizers library raises a bare Exception for a file it cannot parse
            raise UserError(f"tokenizer file {tokenizer_json} is damaged ({first_line(e)}); {hint}") from None
    remote = trust_remote_code and config.get("auto_map")
    has_vocab = any((folder / n).is_file() for n in TOKENIZER_FILES) or any(folder.glob("*.tiktoken"))
    if not has_vocab and not remote:
        raise UserError(
            f"{folder} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)}); copy the model's tokenizer "
            "files into it"
        )
    name = config.get("tokenizer_class")
    from transformers import __version__ as version

    # transformers >= 5 loads tokenizer.json whatever class the config names; 4.x needs the class
    falls_back = tokenizer_json.exists() and int(version.split(".")[0]) >= 5
    if isinstance(name, str) and not remote and not falls_back:
        from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

        if (
            tokenizer_class_from_name(name) is None
            and tokenizer_class_from_name(name.removesuffix("Fast")) is None
        ):
            raise UserError(
                f"tokenizer config {config_path}: tokenizer_class {name!r} is not a tokenizer transformers "
                f"{version} can load; set it to the model's tokenizer class (PreTrainedTokenizerFast works "
                "for any tokenizer.json)"
            )


def _adapter_error(path: Path, problem: str) -> UserError:
    return UserError(f"adapter config {path}: {problem}; it is not a LoRA adapter duotune can load")


def check_adapter_folder(adapter: Path) -> dict[str, list[int]]:
    """adapter_config.json describes a LoRA adapter and adapter_model.safetensors is complete and agrees
    with its rank; returns the adapter's {tensor name: shape}."""
    if not adapter.exists():
        raise UserError(f"--adapter {adapter} does not exist; give the output_dir of a training run")
    if not adapter.is_dir():
        raise UserError(f"--adapter {adapter} is a file; give the adapter's folder (a training output_dir)")
    config_path = adapter / "adapter_config.json"
    if not config_path.is_file():
        raise UserError(
            f"--adapter {adapter}: no adapter_config.json there; give the output_dir of a training run"
        )
    config = read_json(config_path, "adapter config", hint="train the adapter again or restore the file")
    peft_type = config.get("peft_type")
    if peft_type is None:
        raise _adapter_error(config_path, "no peft_type")
    if peft_type != "LORA":
        raise _adapter_error(config_path, f"peft_type is {peft_type!r}, duotune works with LORA adapters")
    r = config.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise _adapter_error(config_path, f"'r' (the rank) must be a positive integer, got {r!r}")
    targets = config.get("target_modules")
    if not targets and not config.get("target_parameters"):
        raise _adapter_error(config_path, "target_modules is empty (no module to adapt)")
    weights = adapter / "adapter_model.safetensors"
    if not weights.exists():
        raise UserError(
            f"--adapter {adapter}: no adapter_model.safetensors (the adapter's weights) next to its "
            "adapter_config.json; the run may not have finished: use one of its checkpoint-N folders"
        )
    shapes = safetensors_shapes(weights, hint="train the adapter again or restore the file")
    if not config.get("rank_pattern"):
        for name, shape in sorted(shapes.items()):
            rank = shape[0] if ".lora_A." in name else shape[-1] if ".lora_B." in name else None
            if rank is not None and len(shape) == 2 and rank != r:
                raise UserError(
                    f"{weights}: {name} has rank {rank} but {config_path.name} says r={r}; the two files "
                    "come from different adapters"
                )
    return shapes


def check_adapter_fits(model, adapter: Path, shapes: dict[str, list[int]]) -> None:
    """Each LoRA matrix of the adapter fits the layer of the base model it adapts."""
    weights = adapter / "adapter_model.safetensors"
    for name, shape in sorted(shapes.items()):
        for part in (".lora_A.", ".lora_B."):
            if part not in name or len(shape) != 2:
                continue
            module_path = name.split(part)[0].removeprefix("base_model.model.")
            try:
                module = model.get_submodule(module_path)
            except AttributeError:
                raise UserError(
                    f"{weights}: {name} adapts {module_path}, which the base model lacks; the adapter was "
                    "trained on another base model (pass the right one with --base/--model)"
                ) from None
            n_in, n_out = getattr(module, "in_features", None), getattr(module, "out_features", None)
            got, want = (shape[1], n_in) if part == ".lora_A." else (shape[0], n_out)
            if want is not None and got != want:
                side = "inputs" if part == ".lora_A." else "outputs"
                raise UserError(
                    f"{weights}: {name} expects {got} {side} but {module_path} of the base model has {want}; "
                    "the adapter was trained on another base model (pass the right one with --base/--model)"
                )


def check_adapter_loaded(model, adapter: Path, shapes: dict[str, list[int]]) -> None:
    """Every LoRA layer peft created from adapter_config.json got its weights from the file: one without
    them would stay at its initial value and silently do nothing."""
    expected = set()
    for name, _ in model.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
            parts = name.split(".")
            expected.add(
                ".".join(
                    p for i, p in enumerate(parts) if not (i > 0 and parts[i - 1] in ("lora_A", "lora_B"))
                )
            )
    missing = sorted(expected - set(shapes))
    if missing:
        example = missing[0].removeprefix("base_model.model.")
        raise UserError(
            f"{adapter / 'adapter_model.safetensors'} lacks the weights of {len(missing)} LoRA matrices that "
            f"adapter_config.json declares (e.g. {example}); the two files come from different adapters"
        )
