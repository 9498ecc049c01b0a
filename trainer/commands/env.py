"""``duotune env``: library versions, every backend with why it is (not) usable, and what a run would use."""

from __future__ import annotations

import json
import platform
from typing import Any

from duotune.backends.base import dist_version

__all__ = ["collect_env", "format_env"]

PACKAGES = (
    ("torch", ("torch",)),
    ("transformers", ("transformers",)),
    ("peft", ("peft",)),
    ("datasets", ("datasets",)),
    ("accelerate", ("accelerate",)),
    ("openmind", ("openmind",)),
    ("openmind_hub", ("openmind-hub", "openmind_hub")),
    ("swanlab", ("swanlab",)),
    ("flash_attn", ("flash-attn", "flash_attn")),
)


def collect_env(device: str = "auto") -> dict[str, Any]:
    from duotune.backends import AUTO_ORDER, BackendError, get_backend
    from duotune.backends.npu import package_versions
    from duotune.trainer.common.errors import UserError
    from duotune.trainer.recipe import Recipe
    from duotune.trainer.run.plan import make_plan

    info: dict[str, Any] = {
        "duotune": dist_version("duotune"),
        "python": platform.python_version(),
        "versions": {name: dist_version(*dists) for name, dists in PACKAGES},
    }
    backends = []
    for name in AUTO_ORDER:  # NPU first: its probe is the only import of the Ascend adapter here
        backends.append(get_backend(name).describe())
    info["versions"].update(package_versions())  # after the probe, which may have imported it
    info["backends"] = backends
    recipe = Recipe(model_name_or_path="-", dataset=["-"], output_dir="-", device=device)  # type: ignore[arg-type]
    try:
        plan = make_plan(recipe)
    except (UserError, BackendError) as e:
        info["plan"] = {"device": device, "error": str(e)}
    else:
        info["plan"] = {
            "requested": device,
            "backend": plan.backend.name,
            "device": plan.device,
            "why": plan.device_why,
            "precision": plan.precision,
            "precision_why": plan.precision_why,
            "attn_implementation": plan.attn_implementation,
            "attn_why": plan.attn_why,
            "framework": plan.framework,
            "framework_why": plan.framework_why,
        }
    return info


def format_env(info: dict[str, Any], as_json: bool = False) -> str:
    if as_json:
        return json.dumps(info, indent=2)
    lines = [f"duotune {info['duotune'] or '(not installed)'}", f"  {'python':<14}{info['python']}"]
    for name, version in info["versions"].items():
        missing = "unknown (read through the Ascend adapter)" if name == "CANN" else "not installed"
        lines.append(f"  {name:<14}{version or missing}")
    lines += ["", "backends (`--device auto` tries them in this order):"]
    for b in info["backends"]:
        mark = "yes" if b["available"] else "no "
        extra = ""
        if b["visible_devices_env"]:
            extra = f" [{b['visible_devices_env']}={b['visible_devices'] if b['visible_devices'] is not None else '(unset)'}]"
        lines.append(f"  {b['name']:<5} {mark}  {b['reason']} (collective: {b['dist_backend']}){extra}")
    plan = info["plan"]
    lines.append("")
    if "error" in plan:
        lines.append(plan["error"])
        return "\n".join(lines)
    lines += [
        f"--device {plan['requested']} would use:",
        f"  {'device':<14}{plan['device']} ({plan['why']})",
        f"  {'precision':<14}{plan['precision']} ({plan['precision_why']})",
        f"  {'attention':<14}{plan['attn_implementation']} ({plan['attn_why']})",
        f"  {'framework':<14}{plan['framework']} ({plan['framework_why']})",
    ]
    return "\n".join(lines)
