"""Regenerate tests/golden/demo_cpu_fp32.json: the per-step losses of the demo recipe on CPU in fp32.

    python scripts/make_golden.py

Runs the real `train` command with no recipe arguments (the bundled demo, seed 42, fp32 on CPU) and
keeps the first steps of its trainer_log.jsonl at full precision. Regenerate only when a change is
meant to alter the numbers (demo model, demo data, encoding, defaults), and say why in the commit.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden" / "demo_cpu_fp32.json"
STEPS = 10
COMMAND = ["train", "--device", "cpu", "report_to=none"]


def main() -> None:
    import peft
    import torch
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        train = Path(sys.executable).parent / "train"
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
        subprocess.run([str(train), *COMMAND[1:], f"output_dir={tmp}/out"], check=True, cwd=tmp, env=env)
        rows = [json.loads(line) for line in Path(tmp, "out", "trainer_log.jsonl").read_text().splitlines()]
    steps = [
        {k: r[k] for k in ("current_steps", "loss", "grad_norm", "learning_rate")}
        for r in rows
        if "loss" in r
    ][:STEPS]
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(
        json.dumps(
            {
                "command": " ".join(COMMAND) + " output_dir=OUT",
                "generated_with": {
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "peft": peft.__version__,
                    "machine": platform.machine(),
                },
                "steps": steps,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {GOLDEN} ({len(steps)} steps)")


if __name__ == "__main__":
    main()
