"""Command line: ``train`` and the ``duotune`` group (``duotune train`` is the same command).

Only click and the recipe module (stdlib + PyYAML) are imported at start-up, so ``--help`` and recipe
errors are instant; torch, transformers and friends load inside the commands.
"""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path

import click
from duotune.backends.registry import DEVICE_CHOICES, HOST_DEVICE
from duotune.trainer.commands.bench import bench_cmd
from duotune.trainer.commands.evaluate import EVAL_RESULTS
from duotune.trainer.common.errors import EXIT_USER_ERROR, UserError

__all__ = [
    "train_cmd",
    "preview_cmd",
    "env_cmd",
    "download_cmd",
    "web_cmd",
    "bench_cmd",
    "duotune",
    "train_main",
    "duotune_main",
]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
DEVICES = list(DEVICE_CHOICES)

OVERRIDES_HELP = (
    "KEY=VALUE pairs override any recipe key; values are read as YAML scalars "
    "(learning_rate=1e-3, max_steps=5, lora_target=q_proj,v_proj, val_size=0.1). "
    "Without --config the bundled demo recipe (configs/demo.yaml) is used. "
    "Every key is listed in the config reference of README.md."
)


def user_errors(func):
    """Print a UserError as plain lines on stderr and exit 2 (3 for a diverged run), with no traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as e:
            for i, line in enumerate(e.problems or [str(e)]):
                click.echo(("error: " if i == 0 else "") + line, err=True)
            sys.exit(getattr(e, "exit_code", EXIT_USER_ERROR))

    return wrapper


def _report_interrupt(stopped) -> None:
    where = f"checkpoint saved at {stopped.checkpoint}" if stopped.checkpoint else "no checkpoint was saved"
    click.echo(
        f"[duotune] stopped at step {stopped.step}: {where}. Resume with the same command plus "
        "resume_from_checkpoint=auto",
        err=True,
    )
    sys.exit(stopped.exit_code)


SHORTHAND_FLAGS = {"model_name_or_path": "--model", "output_dir": "--output-dir", "device": "--device"}


def _load(config: str | None, overrides: tuple[str, ...], **shorthand):
    from duotune.trainer.recipe import load_recipe, parse_overrides

    values = parse_overrides(overrides)
    for key, value in shorthand.items():
        if value is None:
            continue
        if key in values and values[key] != value:  # never let a flag silently replace what was asked
            raise UserError(
                f"{SHORTHAND_FLAGS[key]} {value} and {key}={values[key]} disagree; give only one of them"
            )
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
        help="Device to use (default: the recipe's `device`, normally auto = NPU, then CUDA, then MPS, then CPU).",
    )(func)
    func = click.option(
        "--config",
        "config",
        metavar="PATH",
        type=click.Path(dir_okay=False),
        help="Recipe YAML file (default: the bundled demo recipe).",
    )(func)
    return func


NPROC_HELP = (
    "Processes to train with: a number, or `auto` for one per visible device. Runs under torchrun; "
    "multi-node through NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT."
)


def _launch_argv(command: list[str], config, device, model, output_dir, overrides) -> list[str]:
    argv = list(command)
    for flag, value in (
        ("--config", config),
        ("--device", device),
        ("--model", model),
        ("--output-dir", output_dir),
    ):
        if value is not None:
            argv += [flag, str(value)]
    return argv + list(overrides)


def _maybe_relaunch(nproc, command, config, device, model, output_dir, overrides, recipe) -> None:
    """Re-run this command under torchrun when more than one process is asked for."""
    from duotune.trainer.run.launch import relaunch, resolve_nproc, under_torchrun

    if under_torchrun():
        return
    n = resolve_nproc(nproc, device or recipe.device)
    if n > 1:
        argv = _launch_argv(command, config, device, model, output_dir, overrides)
        sys.exit(relaunch(n, argv, output_dir=recipe.output_dir))


@click.command("train", context_settings=CONTEXT, epilog=OVERRIDES_HELP)
@_recipe_options
@click.option("--nproc", metavar="N|auto", default=None, help=NPROC_HELP)
@user_errors
def train_cmd(config, device, model, output_dir, overrides, nproc):
    """Fine-tune a LoRA adapter as the recipe says.

    \b
    Examples:
      train                                   # the bundled demo, on CPU in about a minute
      train --config configs/deepseek-7b-chat-lora.yaml --device cuda
      train --config my.yaml learning_rate=2e-4 max_steps=100
    """
    recipe, path = _load(config, overrides, model_name_or_path=model, output_dir=output_dir, device=device)
    _maybe_relaunch(nproc, ["train"], config, device, model, output_dir, overrides, recipe)
    from duotune.trainer.run.lifecycle import Interrupted
    from duotune.trainer.run.workflow import run_training

    try:
        run_training(recipe, path)
    except Interrupted as stopped:
        _report_interrupt(stopped)


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
    from duotune.trainer.commands.preview import run_preview

    run_preview(recipe, path, num=num, jsonl=Path(jsonl) if jsonl else None, color=color)


@click.group("parity", context_settings=CONTEXT)
def parity_group():
    """Check that a recipe gives the same model on two machines.

    \b
    On a new cluster:
      duotune parity run --device cuda --output-dir parity-cuda
      duotune parity compare parity-cuda golden:demo
    """


@parity_group.command("run", context_settings=CONTEXT, epilog=OVERRIDES_HELP)
@_recipe_options
@click.option("--framework", type=click.Choice(["auto", "transformers", "openmind"]), default=None)
@click.option("--nproc", metavar="N|auto", default=None, help=NPROC_HELP)
@user_errors
def parity_run_cmd(config, device, model, output_dir, overrides, framework, nproc):
    """Train deterministically and record every step (loss, grad norm, learning rate) and the adapter.

    Without --config it runs the demo recipe, like `train`. It sets logging_steps=1, lora_dropout=0,
    deterministic=true and report_to=none on top of the recipe.
    """
    from duotune.trainer.commands.parity import PARITY_OVERRIDES

    if output_dir is None and not any(o.startswith(("output_dir=", "output-dir=")) for o in overrides):
        raise UserError("parity run needs --output-dir DIR (the run folder that `parity compare` reads)")
    extra = [f"{k}={'true' if v is True else v}" for k, v in PARITY_OVERRIDES.items()]
    extra += ["overwrite_output_dir=true"]
    if framework:
        extra.append(f"framework={framework}")
    all_overrides = tuple(extra) + tuple(overrides)
    recipe, path = _load(
        config, all_overrides, model_name_or_path=model, output_dir=output_dir, device=device
    )
    _maybe_relaunch(nproc, ["parity", "run"], config, device, model, output_dir, all_overrides, recipe)
    from duotune.trainer.run.lifecycle import Interrupted
    from duotune.trainer.run.workflow import run_training

    try:
        result = run_training(recipe, path)
    except Interrupted as stopped:
        _report_interrupt(stopped)
    from duotune.trainer.common.console import echo

    echo(f"parity run recorded in {result.output_dir}; compare it with `duotune parity compare`")


@parity_group.command("compare", context_settings=CONTEXT)
@click.argument("run_a", metavar="A")
@click.argument("run_b", metavar="B")
@click.option(
    "--report",
    "report_dir",
    metavar="DIR",
    default=None,
    help="Where to write the report (default: A's folder).",
)
@user_errors
def parity_compare_cmd(run_a, run_b, report_dir):
    """Compare two parity runs step by step and their final adapters.

    A and B are run folders (from any machine) or golden:NAME for a checked-in reference (golden:demo).
    Writes parity_report.md, parity.json and parity_loss.png; exits 0 when the runs match within the
    tolerance for their precisions, 1 when they do not.
    """
    from duotune.trainer.commands.parity import compare_runs, load_run, write_report
    from duotune.trainer.common.files import check_writable

    a, b = load_run(run_a), load_run(run_b)
    target = Path(report_dir) if report_dir else (a.folder if not run_a.startswith("golden:") else b.folder)
    if report_dir:
        check_writable(target, "--report", folder=True)
    else:
        try:
            check_writable(target, "the report folder", folder=True)
        except UserError as e:
            raise UserError(f"{e}; give --report DIR to write the report elsewhere") from None
    result = compare_runs(a, b)
    for difference in result["recipe_differences"]:
        click.echo(f"[duotune] recipe differs: {difference}")
    files = _write_parity_report(write_report, result, target)
    tol = result["tolerance"]
    click.echo(
        f"[duotune] {result['steps_compared']} steps compared ({tol['name']}): mean relative loss difference "
        f"{result['mean_rel_loss_diff']:.3g} (bound {tol['mean_rel_loss']:g}), max {result['max_rel_loss_diff']:.3g} "
        f"(bound {tol['max_rel_loss']:g})"
    )
    ad = result["adapter"]
    if ad.get("compared"):
        click.echo(
            f"[duotune] adapters: worst relative L2 difference {ad['max_rel_l2_diff']:.3g} (bound {tol['adapter_rel']:g})"
        )
    if result["ok"]:
        click.echo(f"[duotune] MATCH. Report: {files[0]}")
        return
    for problem in result["problems"]:
        click.echo(f"[duotune] {problem}")
    click.echo(f"[duotune] NO MATCH. Report: {files[0]}")
    sys.exit(1)


def _write_parity_report(write_report, result, target: Path) -> list[Path]:
    """write_report, leaving nothing behind if the disk fills up half-way."""
    from duotune.trainer.common.files import write_error

    names = ("parity_report.md", "parity.json", "parity_loss.png")
    existed = {n for n in names if (target / n).exists()}
    created = [p for p in (target, *target.parents) if not p.exists()]
    try:
        return write_report(result, target)
    except OSError as e:
        for n in names:
            if n not in existed:
                (target / n).unlink(missing_ok=True)
        for folder in created:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise write_error(e, "the parity report to", target) from None


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
    from duotune.trainer.common.files import check_writable
    from duotune.trainer.model.hub import fetch_model, looks_like_path, parse_model_spec

    ids = "download takes a hub id: ORG/NAME, hf://ORG/NAME or modelers://ORG/NAME"
    if "://" not in model and Path(model).expanduser().is_dir():
        raise UserError(
            f"{model} is a local folder, not a hub model id ({ids}); a local folder needs no download"
        )
    if "://" not in model and looks_like_path(model):
        raise UserError(f"{model!r} is not a hub model id ({ids})")
    ref = parse_model_spec(model, hub, what="MODEL")
    if ref.kind == "demo":
        raise UserError(f"{model} is the bundled demo model, built locally on first use: nothing to download")
    if ref.kind != "hub":
        raise UserError(f"{model!r} is not a hub model id ({ids})")
    for flag, folder in (("--local-dir", local_dir), ("--cache-dir", cache_dir)):
        if folder:
            check_writable(folder, flag, folder=True)
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


DEVICE_OPTION_HELP = "Device (default: auto = NPU, then CUDA, then MPS, then CPU)."


@click.command("merge", context_settings=CONTEXT)
@click.option(
    "--adapter", required=True, metavar="DIR", help="The adapter: a training output_dir or checkpoint-N."
)
@click.option(
    "--base", metavar="MODEL", default=None, help="Base model (default: the one the adapter was trained on)."
)
@click.option(
    "--output-dir",
    "output_dir",
    required=True,
    metavar="DIR",
    help="Where the merged model goes (new folder).",
)
@click.option(
    "--dtype",
    type=click.Choice(["auto", "bf16", "fp16", "fp32"]),
    default="auto",
    show_default=True,
    help="Weights dtype of the merged model (auto: the base model's own on CPU).",
)
@click.option("--max-shard-size", default="5GB", show_default=True, help="Largest safetensors file.")
@click.option(
    "--device", type=click.Choice(DEVICES), default=HOST_DEVICE, show_default=True, help="Where to merge."
)
@click.option(
    "--verify",
    is_flag=True,
    help="Reload the merged folder and check that its logits equal base + adapter's (exit 1 if not).",
)
@user_errors
def merge_cmd(adapter, base, output_dir, dtype, max_shard_size, device, verify):
    """Fold a LoRA adapter into its base model and save a standalone model.

    The merged folder holds sharded safetensors, the tokenizer with the chat template used in training,
    the base model's other non-weight files and a README saying what it was merged from; it loads with
    plain transformers. Merging on CPU needs about as much memory as the model in --dtype (a 7B model:
    ~15 GB in bf16, ~30 GB in fp32).
    """
    from duotune.trainer.commands.merge import MergeVerificationError, merge_adapter

    try:
        merge_adapter(
            adapter,
            output_dir,
            base=base,
            dtype=dtype,
            max_shard_size=max_shard_size,
            device=device,
            verify=verify,
        )
    except MergeVerificationError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


def _model_options(func):
    """--model / --adapter / --device / --dtype, shared by chat and eval."""
    for decorator in reversed(
        [
            click.option(
                "--model",
                metavar="MODEL",
                default=None,
                help="Base model: folder or hub id (default: the adapter's base).",
            ),
            click.option("--adapter", metavar="DIR", default=None, help="A trained adapter to apply."),
            click.option("--device", type=click.Choice(DEVICES), default=None, help=DEVICE_OPTION_HELP),
            click.option(
                "--dtype",
                type=click.Choice(["auto", "bf16", "fp16", "fp32"]),
                default="auto",
                show_default=True,
            ),
        ]
    ):
        func = decorator(func)
    return func


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that also refuses nan and inf (click's range checks let nan through)."""

    name = "finite float range"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _generation_options(func):
    for decorator in reversed(
        [
            click.option("--max-new-tokens", type=click.IntRange(min=1), default=512, show_default=True),
            click.option(
                "--temperature", type=FiniteFloatRange(min=0.0, min_open=True), default=0.7, show_default=True
            ),
            click.option(
                "--top-p", type=FiniteFloatRange(0.0, 1.0, min_open=True), default=0.9, show_default=True
            ),
            click.option(
                "--repetition-penalty",
                type=FiniteFloatRange(min=0.0, min_open=True),
                default=1.1,
                show_default=True,
            ),
            click.option(
                "--do-sample/--greedy",
                default=True,
                show_default=True,
                help="Sample, or always take the likeliest token.",
            ),
            click.option(
                "--seed",
                type=click.IntRange(0, 2**32 - 1),
                default=None,
                help="Seed for sampling (reproducible answers).",
            ),
        ]
    ):
        func = decorator(func)
    return func


@click.command("chat", context_settings=CONTEXT)
@_model_options
@click.option("--system", metavar="TEXT", default=None, help="System prompt.")
@click.option("--prompt", metavar="TEXT", default=None, help="Answer this one message and exit.")
@click.option("--compare", is_flag=True, help="Show the base model's and the adapter's answers side by side.")
@_generation_options
@user_errors
def chat_cmd(model, adapter, device, dtype, system, prompt, compare, max_new_tokens, temperature, top_p,
             repetition_penalty, do_sample, seed):  # fmt: skip
    """Chat with a model through its chat template, streaming the answer."""
    from duotune.trainer.commands.chat import Chat, GenerationSettings, side_by_side
    from duotune.trainer.model.inference import load_model_and_tokenizer

    if compare and not adapter:
        raise UserError("--compare needs --adapter (it compares the base model with the adapter)")
    if prompt is not None and not prompt.strip():
        raise UserError("--prompt is empty; give the message to answer")
    lm = load_model_and_tokenizer(model, adapter, device=device, dtype=dtype)
    if not getattr(lm.tokenizer, "chat_template", None):
        raise UserError(
            f"the tokenizer of {lm.base.model_name_or_path} has no chat_template (tokenizer_config.json); "
            "chat renders the conversation with the model's own template"
        )
    from duotune.trainer.data.templates import check_template_renders

    check_template_renders(lm.tokenizer, lm.base.model_name_or_path)
    settings = GenerationSettings(max_new_tokens, temperature, top_p, repetition_penalty, do_sample)
    if seed is not None:
        from transformers import set_seed

        set_seed(seed)
    chat = Chat(lm, settings, system=system)
    if prompt is None:
        chat.loop(compare=compare)
        return
    if compare:
        base, tuned = chat.compare(prompt)
        click.echo(side_by_side("base model", base, "with adapter", tuned))
    else:
        chat.answer(prompt, stream=True)


@click.command("eval", context_settings=CONTEXT)
@_model_options
@click.option(
    "--dataset",
    "datasets",
    metavar="PATH",
    multiple=True,
    required=True,
    help="JSON/JSONL file in any training format (repeatable), or demo://counselling.",
)
@click.option(
    "--dataset-format", type=click.Choice(["auto", "conversation", "alpaca", "messages"]), default="auto"
)
@click.option("--template", default="auto", show_default=True, help="Chat template (as in the recipe).")
@click.option(
    "--cutoff-len",
    type=click.IntRange(min=1),
    default=None,
    help="Default: the adapter's training cutoff_len, else 2048.",
)
@click.option("--max-samples", type=click.IntRange(min=1), default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--output",
    metavar="FILE",
    default=None,
    help=f"Where to write the results (default: {EVAL_RESULTS} in the --adapter folder; without --adapter "
    "the results are only printed).",
)
@user_errors
def eval_cmd(
    model,
    adapter,
    datasets,
    dataset_format,
    template,
    cutoff_len,
    max_samples,
    batch_size,
    device,
    dtype,
    output,
):
    """Loss and perplexity on the learned tokens of a dataset, encoded exactly as training does."""
    from duotune.trainer.commands.evaluate import evaluate_dataset
    from duotune.trainer.common.files import check_writable
    from duotune.trainer.model.inference import load_model_and_tokenizer

    if output is not None:
        check_writable(output, "--output", folder=False)
    elif adapter:
        output = str(Path(adapter) / EVAL_RESULTS)
        try:
            check_writable(output, "the results file", folder=False)
        except UserError as e:
            raise UserError(f"{e}; give --output FILE to write the results elsewhere") from None
    if cutoff_len is None:
        cutoff_len = _adapter_cutoff(adapter) or 2048
    lm = load_model_and_tokenizer(model, adapter, device=device, dtype=dtype)
    evaluate_dataset(
        lm,
        list(datasets),
        dataset_format=dataset_format,
        template=template,
        cutoff_len=cutoff_len,
        max_samples=max_samples,
        batch_size=batch_size,
        output=Path(output) if output is not None else None,
    )


def _adapter_cutoff(adapter: str | None) -> int | None:
    """cutoff_len of the run that trained the adapter (its run_config.yaml), if it says."""
    if not adapter:
        return None
    from duotune.trainer.model.checks import check_adapter_folder
    from duotune.trainer.model.inference import read_run_config

    check_adapter_folder(Path(adapter))
    cfg, path = read_run_config(Path(adapter))
    value = cfg.get("cutoff_len")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(
            f"run config {path}: cutoff_len must be a positive integer, got {value!r}; fix it or pass --cutoff-len"
        )
    return value


@click.command("env", context_settings=CONTEXT)
@click.option(
    "--device", type=click.Choice(DEVICES), default="auto", show_default=True, help="Device to plan for."
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@user_errors
def env_cmd(device, as_json):
    """Show versions, every device backend (usable or why not) and what a run would use."""
    from duotune.trainer.commands.env import collect_env, format_env

    info = collect_env(device)
    click.echo(format_env(info, as_json=as_json))
    if "error" in info["plan"]:  # the report is printed; a run on this device would be refused: say so
        raise UserError(info["plan"]["error"].splitlines()[0])


@click.command("web", context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True)
@click.option(
    "--auth", metavar="USER:PASS", default=None, help="Require this login (needed beyond 127.0.0.1)."
)
@click.option(
    "--auth-file",
    metavar="FILE",
    default=None,
    help="Logins from a file, one USER:PASS per line (keeps the password out of `ps`).",
)
@click.option("--share", is_flag=True, help="Also publish a public Gradio share link (needs --auth).")
@click.option(
    "--lang", type=click.Choice(["en", "zh"]), default="en", show_default=True, help="First language."
)
@user_errors
def web_cmd(host, port, auth, auth_file, share, lang):
    """Train, watch, evaluate, chat and export from the browser (needs `pip install "duotune[web]"`).

    Runs started from the page are `train` commands of their own: they go on when the page or this
    server closes, and the page re-attaches to them from their output_dir when opened again.
    """
    from duotune.trainer.web.server import serve

    serve(host=host, port=port, auth=auth, auth_file=auth_file, share=share, lang=lang)


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="duotune", prog_name="duotune")
def duotune():
    """duotune: one LoRA fine-tuning recipe for CUDA, Ascend NPU and CPU."""


duotune.add_command(train_cmd)
duotune.add_command(preview_cmd)
duotune.add_command(env_cmd)
duotune.add_command(download_cmd)
duotune.add_command(parity_group)
duotune.add_command(merge_cmd)
duotune.add_command(chat_cmd)
duotune.add_command(eval_cmd)
bench_cmd.callback = user_errors(bench_cmd.callback)
duotune.add_command(bench_cmd)
duotune.add_command(web_cmd)


def train_main() -> None:
    train_cmd(prog_name="train")


def duotune_main() -> None:
    duotune(prog_name="duotune")


if __name__ == "__main__":
    duotune_main()
