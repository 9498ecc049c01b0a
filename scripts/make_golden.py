"""Regenerate tests/golden/demo/: the reference run that `duotune parity compare RUN golden:demo` uses.

    python scripts/make_golden.py

Runs `duotune parity run --device cpu` on the demo recipe (fp32, seed 42, deterministic) and keeps the
per-step log (full-precision losses), the final adapter and the run's metadata. Regenerate only when a
change is meant to alter the numbers (demo model, demo data, encoding, defaults), and say why in the
commit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden" / "demo"
KEEP = (
    "trainer_log.jsonl",
    "adapter_model.safetensors",
    "adapter_config.json",
    "run_info.json",
    "run_config.yaml",
)


def main() -> None:
    duotune = Path(sys.executable).parent / "duotune"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
        cmd = [str(duotune), "parity", "run", "--device", "cpu", "--output-dir", str(out)]
        subprocess.run(cmd, check=True, cwd=tmp, env=env)
        if GOLDEN.exists():
            shutil.rmtree(GOLDEN)
        GOLDEN.mkdir(parents=True)
        for name in KEEP:
            shutil.copy2(out / name, GOLDEN / name)
            (GOLDEN / name).chmod(0o644)
    (GOLDEN / "README.md").write_text(
        "Reference run of the demo recipe: `duotune parity run --device cpu` (fp32, seed 42).\n"
        "Regenerate with `python scripts/make_golden.py`; compare a run with "
        "`duotune parity compare RUN golden:demo`.\n"
    )
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
