"""README.md stays true: its test command is what CI runs, its config reference matches the recipe."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO


def _quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_quick_start_has_the_two_commands_and_ci_runs_the_test_one():
    install_and_train, install_and_test = _quick_start_commands()
    assert install_and_train.endswith("&& .venv/bin/train")
    assert "torch==2.13.0" in install_and_train and "torch==2.13.0" in install_and_test
    ci = (REPO / ".ci" / "run").read_text()
    assert install_and_test in ci.splitlines()


def test_config_reference_matches_the_recipe_dataclass():
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_config_reference.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_recipe_key_is_documented_in_the_readme():
    from duotune.trainer.recipe import recipe_fields

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in recipe_fields():
        assert f"| `{name}` |" in readme, name
