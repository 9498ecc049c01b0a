"""``duotune parity``: does the same recipe give the same model on two machines?

``parity run`` trains with deterministic settings and records every step; ``parity compare`` compares two
such runs (folders, possibly from different machines, or ``golden:NAME`` for a checked-in reference) step
by step and the final adapters, with tolerances chosen from the two runs' precisions:

==================  ============================  ==========================  =======================
runs                mean relative loss difference  max relative loss difference  adapter (relative L2)
==================  ============================  ==========================  =======================
fp32 vs fp32        1e-4                           1e-3                          1e-3
bf16/fp16 involved  2e-2                           1e-1                          1e-1
==================  ============================  ==========================  =======================

fp32 runs on different hardware differ only by summation order, so their curves must agree to about
four digits. bf16 keeps 8 bits of mantissa (about 2-3 significant digits) and fp16 10 bits, so a
half-precision run tracks an fp32 run to a couple of percent per step on average, with single steps
further off; the bounds above are set there and are deliberately loose enough for that and no looser.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duotune.trainer.common.errors import UserError
from duotune.trainer.common.files import read_json, read_text, read_yaml_mapping

__all__ = [
    "PARITY_OVERRIDES",
    "Tolerance",
    "tolerance_for",
    "load_run",
    "compare_runs",
    "write_report",
    "golden_dir",
]

# What `parity run` sets on top of the recipe: one log line per update, no randomness beyond the seed,
# no tracker, one checkpoint at the end.
PARITY_OVERRIDES: dict[str, Any] = {
    "logging_steps": 1,
    "lora_dropout": 0.0,
    "report_to": "none",
    "deterministic": True,
    "plot_loss": True,
}


@dataclass(frozen=True)
class Tolerance:
    name: str
    mean_rel_loss: float
    max_rel_loss: float
    adapter_rel: float


TIGHT = Tolerance("fp32 vs fp32", 1e-4, 1e-3, 1e-3)
LOOSE = Tolerance("half precision involved", 2e-2, 1e-1, 1e-1)


def tolerance_for(precision_a: str, precision_b: str) -> Tolerance:
    return TIGHT if precision_a == precision_b == "fp32" else LOOSE


def golden_dir() -> Path:
    """The checked-in references (tests/golden, shipped inside the package as duotune/tests/golden)."""
    from duotune import PACKAGE_ROOT

    candidate = PACKAGE_ROOT / "tests" / "golden"
    if candidate.is_dir():
        return candidate
    raise UserError("the golden references are missing from this installation; reinstall duotune")


@dataclass
class Run:
    name: str
    folder: Path
    steps: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    adapter: dict | None = None
    config: dict = field(default_factory=dict)  # its run_config.yaml: the resolved recipe

    @property
    def precision(self) -> str:
        return self.info.get("precision", "fp32")


def load_run(spec: str) -> Run:
    if spec.startswith("golden:"):
        name = spec.split(":", 1)[1]
        folder = golden_dir() / name
        if not folder.is_dir():
            known = ", ".join(sorted(f"golden:{p.name}" for p in golden_dir().iterdir() if p.is_dir()))
            raise UserError(f"no golden reference {spec!r}; known: {known}")
    else:
        folder = Path(spec)
    log = folder / "trainer_log.jsonl"
    if not log.exists():
        raise UserError(
            f"{spec}: not a run folder (no trainer_log.jsonl); give the output_dir of a `duotune parity run`"
        )
    steps = _loss_lines(log)
    info_file = folder / "run_info.json"
    info = (
        read_json(info_file, "run info", hint="restore it or run `duotune parity run` again")
        if info_file.exists()
        else {}
    )
    adapter = None
    weights = folder / "adapter_model.safetensors"
    if weights.exists():
        from duotune.trainer.model.checks import safetensors_shapes
        from safetensors.torch import load_file

        safetensors_shapes(weights, hint="restore it or run `duotune parity run` again")
        adapter = load_file(str(weights))
    return Run(spec, folder, steps, info, adapter, _read_config(folder / "run_config.yaml"))


def _read_config(path: Path) -> dict:
    """The run's run_config.yaml (its resolved recipe), or {} when the folder has none."""
    if not path.exists():
        return {}
    return read_yaml_mapping(path, "run config", "restore it or run `duotune parity run` again")


# Recipe keys that change what is trained. Two runs that differ in one of them are different experiments,
# whatever their curves say; keys like device, compute_type, framework or output_dir are what a parity
# check varies on purpose and are not listed.
TRAINING_KEYS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_ratio",
    "warmup_steps",
    "num_train_epochs",
    "max_steps",
    "seed",
    "cutoff_len",
    "max_samples",
    "val_size",
    "dataset_format",
    "template",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "lora_target",
    "additional_target",
    "use_rslora",
    "use_dora",
    "pissa_init",
    "loraplus_lr_ratio",
    "optim",
    "weight_decay",
    "max_grad_norm",
    "neftune_noise_alpha",
    "packing",
)


def _global_batch(run: Run) -> tuple[int, str] | None:
    c = run.config
    try:
        batch, accumulation = int(c["per_device_train_batch_size"]), int(c["gradient_accumulation_steps"])
    except (KeyError, TypeError, ValueError):
        return None
    world = int(run.info.get("world_size", 1) or 1)
    processes = f"{world} process{'es' if world > 1 else ''}"
    return batch * accumulation * world, f"{batch} per device x {accumulation} accumulation x {processes}"


def recipe_differences(a: Run, b: Run) -> list[str]:
    """What differs between the two runs' recipes and data, in the terms that change the training."""
    found = []
    ga, gb = _global_batch(a), _global_batch(b)
    if ga and gb and ga[0] != gb[0]:
        found.append(f"global batch {ga[0]} ({ga[1]}) vs {gb[0]} ({gb[1]})")
    for key in TRAINING_KEYS:
        if key in a.config and key in b.config and a.config[key] != b.config[key]:
            found.append(f"{key} {a.config[key]!r} vs {b.config[key]!r}")
    fa, fb = a.info.get("data_fingerprint"), b.info.get("data_fingerprint")
    if fa and fb and fa != fb:
        found.append(
            f"data: the encoded examples differ (dataset {a.config.get('dataset')!r} vs {b.config.get('dataset')!r})"
        )
    return found


def _loss_lines(log: Path) -> list[dict]:
    """The loss lines of a trainer_log.jsonl, each checked: a JSON object with an integer current_steps and
    a numeric loss (NaN and infinite losses are data: a diverged run compares as such)."""
    hint = "it is not a trainer_log.jsonl written by duotune; give the run folder of `duotune parity run`"
    text = read_text(log, "training log", hint)
    steps = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"training log {log} line {lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: invalid JSON at column {e.colno} ({e.msg}); {hint}") from None
        except RecursionError:
            raise UserError(f"{where}: JSON nested too deeply; {hint}") from None
        if not isinstance(row, dict):
            raise UserError(f"{where}: a log line must be a JSON object, got {type(row).__name__}; {hint}")
        if "loss" not in row:
            continue  # evaluation lines
        step, loss = row.get("current_steps"), row["loss"]
        if not isinstance(step, int) or isinstance(step, bool):
            raise UserError(f"{where}: current_steps must be an integer, got {step!r}; {hint}")
        if not isinstance(loss, (int, float)) or isinstance(loss, bool):
            raise UserError(f"{where}: loss must be a number, got {loss!r}; {hint}")
        steps.append(row)
    if not steps:
        raise UserError(f"training log {log} holds no loss lines: the run logged no training step; {hint}")
    return steps


def _rel(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return math.inf
    return abs(a - b) / max(abs(b), 1e-12)


def compare_runs(a: Run, b: Run) -> dict[str, Any]:
    """Step-by-step and adapter comparison; ``result["ok"]`` says whether it is within tolerance."""
    tol = tolerance_for(a.precision, b.precision)
    differences = recipe_differences(a, b)
    problems: list[str] = []
    if differences:
        problems.append("the recipes differ (" + "; ".join(differences) + "): these are different trainings")
    by_step_a = {s["current_steps"]: s for s in a.steps}
    by_step_b = {s["current_steps"]: s for s in b.steps}
    common = sorted(set(by_step_a) & set(by_step_b))
    if set(by_step_a) != set(by_step_b):
        problems.append(
            f"the runs logged different steps ({len(by_step_a)} vs {len(by_step_b)}): not the same recipe "
            "or one of them did not finish"
        )
    rows = []
    first_bad = None
    for step in common:
        la, lb = by_step_a[step]["loss"], by_step_b[step]["loss"]
        rel = _rel(la, lb)
        rows.append(
            {
                "step": step,
                "loss_a": la,
                "loss_b": lb,
                "rel_diff": rel,
                "grad_norm_a": by_step_a[step].get("grad_norm"),
                "grad_norm_b": by_step_b[step].get("grad_norm"),
                "lr_a": by_step_a[step].get("learning_rate"),
                "lr_b": by_step_b[step].get("learning_rate"),
            }
        )
        if first_bad is None and rel > tol.max_rel_loss:
            first_bad = step
    rels = [r["rel_diff"] for r in rows]
    mean_rel = sum(rels) / len(rels) if rels else math.inf
    max_rel = max(rels) if rels else math.inf
    if not rows:
        problems.append("no common logged step")
    if mean_rel > tol.mean_rel_loss:
        problems.append(f"mean relative loss difference {mean_rel:.3g} > {tol.mean_rel_loss:g}")
    if first_bad is not None:
        problems.append(
            f"losses diverge first at step {first_bad} (relative difference {by_step_rel(rows, first_bad):.3g} > "
            f"{tol.max_rel_loss:g})"
        )
    adapter = _compare_adapters(a.adapter, b.adapter, tol, problems)
    return {
        "ok": not problems,
        "a": {"run": a.name, **a.info},
        "b": {"run": b.name, **b.info},
        "tolerance": tol.__dict__,
        "recipe_differences": differences,
        "steps_compared": len(rows),
        "mean_rel_loss_diff": mean_rel,
        "max_rel_loss_diff": max_rel,
        "first_diverging_step": first_bad,
        "adapter": adapter,
        "problems": problems,
        "per_step": rows,
    }


def by_step_rel(rows: list[dict], step: int) -> float:
    return next(r["rel_diff"] for r in rows if r["step"] == step)


def _compare_adapters(a: dict | None, b: dict | None, tol: Tolerance, problems: list[str]) -> dict[str, Any]:
    if a is None or b is None:
        problems.append(
            "an adapter is missing (adapter_model.safetensors), so the final weights cannot be compared"
        )
        return {"compared": False}
    if set(a) != set(b):
        problems.append("the adapters hold different tensors (different LoRA targets or rank?)")
        return {"compared": False}
    worst_name, worst = None, 0.0
    for key in sorted(a):
        ta, tb = a[key].double(), b[key].double()
        if ta.shape != tb.shape:
            problems.append(f"adapter tensor {key} has shape {tuple(ta.shape)} vs {tuple(tb.shape)}")
            return {"compared": False}
        denom = max(float(tb.norm()), 1e-12)
        rel = float((ta - tb).norm()) / denom
        if rel > worst:
            worst_name, worst = key, rel
    if worst > tol.adapter_rel:
        problems.append(
            f"adapter tensor {worst_name} differs by {worst:.3g} relative (> {tol.adapter_rel:g})"
        )
    return {"compared": True, "tensors": len(a), "max_rel_l2_diff": worst, "worst_tensor": worst_name}


def write_report(result: dict[str, Any], report_dir: Path) -> list[Path]:
    """parity_report.md, parity.json and parity_loss.png (the two loss curves over each other)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "parity.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot = report_dir / "parity_loss.png"
    _plot(result, plot)
    a, b, tol = result["a"], result["b"], result["tolerance"]
    verdict = "MATCH" if result["ok"] else "NO MATCH"
    lines = [
        f"# Parity: {verdict}",
        "",
        "| | A | B |",
        "| --- | --- | --- |",
        f"| run | `{a['run']}` | `{b['run']}` |",
    ]
    for key in ("device", "precision", "framework", "world_size", "attn_implementation"):
        lines.append(f"| {key} | {a.get(key, '?')} | {b.get(key, '?')} |")
    differences = result.get("recipe_differences") or []
    lines += ["", "## Recipe", ""]
    lines += [f"- differs: {d}" for d in differences] or ["- the same in every key that changes the training"]
    lines += [
        "",
        f"Tolerance ({tol['name']}): mean relative loss difference <= {tol['mean_rel_loss']:g}, "
        f"every step <= {tol['max_rel_loss']:g}, adapter tensors <= {tol['adapter_rel']:g} relative L2.",
        "",
        f"- steps compared: {result['steps_compared']}",
        f"- mean relative loss difference: {result['mean_rel_loss_diff']:.3g}",
        f"- max relative loss difference: {result['max_rel_loss_diff']:.3g}",
        f"- first diverging step: {result['first_diverging_step'] or 'none'}",
    ]
    ad = result["adapter"]
    if ad.get("compared"):
        lines.append(
            f"- adapter: {ad['tensors']} tensors, worst relative L2 difference {ad['max_rel_l2_diff']:.3g}"
        )
    if result["problems"]:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in result["problems"]]
    lines += [
        "",
        "![loss curves](parity_loss.png)",
        "",
        "## Per step",
        "",
        "| step | loss A | loss B | rel. diff |",
    ]
    lines.append("| --- | --- | --- | --- |")
    for r in result["per_step"]:
        lines.append(f"| {r['step']} | {r['loss_a']:.6f} | {r['loss_b']:.6f} | {r['rel_diff']:.2e} |")
    (report_dir / "parity_report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [report_dir / "parity_report.md", report_dir / "parity.json", plot]


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["per_step"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=[3, 1])
    steps = [r["step"] for r in rows]
    top.plot(
        steps,
        [r["loss_a"] for r in rows],
        label=f"A: {result['a'].get('device', '?')} {result['a'].get('precision', '')}",
    )
    top.plot(
        steps,
        [r["loss_b"] for r in rows],
        "--",
        label=f"B: {result['b'].get('device', '?')} {result['b'].get('precision', '')}",
    )
    top.set_ylabel("loss")
    top.legend()
    top.set_title("parity: " + ("match" if result["ok"] else "NO MATCH"))
    bottom.semilogy(steps, [max(r["rel_diff"], 1e-12) for r in rows], color="gray")
    bottom.axhline(result["tolerance"]["max_rel_loss"], color="red", linestyle=":", label="per-step bound")
    bottom.set_ylabel("rel. diff")
    bottom.set_xlabel("step")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
