"""Command line: ``train`` and the ``duotune`` group (``duotune train`` is the same command).

Only click and the recipe module (stdlib + PyYAML) are imported at start-up, so ``--help`` and recipe
errors are instant; torch, transformers and friends load inside the commands.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from .errors import EXIT_USER_ERROR, UserError

__all__ = ["train_cmd", "preview_cmd", "env_cmd", "download_cmd", "duotune", "train_main", "duotune_main"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
DEVICES = ["auto", "cpu", "cuda", "npu", "mps"]

OVERRIDES_HELP = (
    "KEY=VALUE pairs override any recipe key; values are read as YAML scalars "
    "(learning_rate=1e-3, max_steps=5, lora_target=q_proj,v_proj, val_size=0.1). "
    "Without --config the bundled demo recipe (configs/demo.yaml) is used. "
    "Every key is listed in the config reference of README.md."
)


def user_errors(func):
    """Print a UserError as plain lines on stderr and exit 2, with no traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as e:
            for i, line in enumerate(e.problems or [str(e)]):
                click.echo(("error: " if i == 0 else "") + line, err=True)
            sys.exit(EXIT_USER_ERROR)

    return wrapper


def _load(config: str | None, overrides: tuple[str, ...], **shorthand):
    from .recipe import load_recipe, parse_overrides

    values = parse_overrides(overrides)
    for key, value in shorthand.items():
        if value is not None:
            values[key] = value
    return load_recipe(config, values)


def _recipe_options(func):
    func = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")(func)
    func = click.option("--output-dir", "output_dir", metavar="DIR", help="Shorthand for output_dir=DIR.")(
        func
    )
    func = click.option(
        "--model", "model", metavar="ID_OR_PATH", help="Shorthand for model_name_or_path=ID_OR_PATH."
    )(func)
    func = click.option(
        "--device",
        type=click.Choice(DEVICES),
        default=None,
        help="Device to use (default: the recipe's `device`, normally auto = NPU, then CUDA, then CPU).",
    )(func)
    func = click.option(
        "--config",
        "config",
        metavar="PATH",
        type=click.Path(dir_okay=False),
        help="Recipe YAML file (default: the bundled demo recipe).",
    )(func)
    return func


@click.command("train", context_settings=CONTEXT, epilog=OVERRIDES_HELP)
@_recipe_options
@user_errors
def train_cmd(config, device, model, output_dir, overrides):
    """Fine-tune a LoRA adapter as the recipe says.

    \b
    Examples:
      train                                   # the bundled demo, on CPU in about a minute
      train --config configs/deepseek-7b-chat-lora.yaml --device cuda
      train --config my.yaml learning_rate=2e-4 max_steps=100
    """
    recipe, path = _load(config, overrides, model_name_or_path=model, output_dir=output_dir, device=device)
    from .train import run_training

    run_training(recipe, path)


@click.command("preview", context_settings=CONTEXT, epilog=OVERRIDES_HELP)
@_recipe_options
@click.option(
    "-n", "num", type=click.IntRange(min=0), default=3, show_default=True, help="Examples to print."
)
@click.option(
    "--jsonl",
    "jsonl",
    metavar="PATH",
    type=click.Path(dir_okay=False),
    help='Write every kept example as {"input_ids": [...], "labels": [...]} per line.',
)
@click.option(
    "--color/--no-color", default=None, help="Colour learned tokens (default: when writing to a terminal)."
)
@user_errors
def preview_cmd(config, device, model, output_dir, overrides, num, jsonl, color):
    """Show the data exactly as training will see it.

    Encodes the dataset with the recipe's tokenizer, template and cutoff_len, prints counts and the
    first examples with the learned (trained) tokens marked [[like this]].
    """
    recipe, path = _load(config, overrides, model_name_or_path=model, output_dir=output_dir, device=device)
    from .preview import run_preview

    run_preview(recipe, path, num=num, jsonl=Path(jsonl) if jsonl else None, color=color)


@click.command("download", context_settings=CONTEXT)
@click.argument("model", metavar="MODEL")
@click.option(
    "--hub",
    type=click.Choice(["hf", "modelers"]),
    default=None,
    help="Hub of a bare ORG/NAME id (default: $DUOTUNE_HUB, else hf).",
)
@click.option("--revision", metavar="REV", default=None, help="Branch, tag or commit (default: main).")
@click.option(
    "--local-dir", metavar="DIR", default=None, help="Put the files in DIR instead of the hub's cache."
)
@click.option(
    "--cache-dir", metavar="DIR", default=None, help="Use this cache instead of the hub client's default."
)
@click.option("--trust-remote-code", is_flag=True, help="Also fetch the repo's Python files.")
@click.option("--allow-pickle-weights", is_flag=True, help="Also fetch pickle weights (*.bin).")
@user_errors
def download_cmd(model, hub, revision, local_dir, cache_dir, trust_remote_code, allow_pickle_weights):
    """Pre-fetch a model (for compute nodes without network).

    \b
    Examples:
      duotune download deepseek-ai/deepseek-llm-7b-chat
      duotune download modelers://AI-Research/Qwen2.5-7B-Instruct
      duotune download Qwen/Qwen2.5-7B-Instruct --local-dir /shared/models/qwen2.5-7b
    Then train with HF_HUB_OFFLINE=1 (MODELERS_OFFLINE=1 for Modelers), or point
    model_name_or_path at the --local-dir folder.
    """
    from .hub import fetch_model, parse_model_spec

    ref = parse_model_spec(model, hub)
    if ref.kind != "hub":
        raise UserError(f"{model!r} is not a hub model id (ORG/NAME, hf://ORG/NAME or modelers://ORG/NAME)")
    folder = fetch_model(
        ref,
        revision=revision,
        cache_dir=cache_dir,
        local_dir=local_dir,
        trust_remote_code=trust_remote_code,
        allow_pickle_weights=allow_pickle_weights,
    )
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    click.echo(f"[duotune] downloaded {ref.describe()} ({size / 2**20:.1f} MiB) to {folder}")
    offline = "HF_HUB_OFFLINE=1" if ref.hub == "hf" else "MODELERS_OFFLINE=1"
    click.echo(
        f"[duotune] train with model_name_or_path={folder if local_dir else model} (works offline with {offline})"
    )


@click.command("env", context_settings=CONTEXT)
@click.option(
    "--device", type=click.Choice(DEVICES), default="auto", show_default=True, help="Device to plan for."
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@user_errors
def env_cmd(device, as_json):
    """Show versions, every device backend (usable or why not) and what a run would use."""
    from .envinfo import collect_env, format_env

    click.echo(format_env(collect_env(device), as_json=as_json))


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="duotune", prog_name="duotune")
def duotune():
    """duotune: one LoRA fine-tuning recipe for CUDA, Ascend NPU and CPU."""


duotune.add_command(train_cmd)
duotune.add_command(preview_cmd)
duotune.add_command(env_cmd)
duotune.add_command(download_cmd)


def train_main() -> None:
    train_cmd(prog_name="train")


def duotune_main() -> None:
    duotune(prog_name="duotune")


if __name__ == "__main__":
    duotune_main()
