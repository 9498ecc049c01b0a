"""Structure rules, checked on the real code: one import name, device code only in backends/, a trainer/
whose folders are the steps of a run, no import cycles, lint-clean."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from conftest import REPO

CODE_FOLDERS = ("backends", "collators", "trainer")
DEVICE_API = re.compile(r"torch\.cuda|torch\.npu|torch_npu")
DEVICE_NAMES = {"cuda", "npu", "mps"}
# trainer/ is the recipe plus one subpackage per part of a run; nothing else sits flat in it
TRAINER_SUBPACKAGES = {"common", "data", "model", "run", "commands", "demo", "web"}
TRAINER_MODULES = {"__init__.py", "recipe.py"}


def _python_files(*folders: str):
    for folder in folders:
        yield from sorted((REPO / folder).rglob("*.py"))


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["duotune", *parts])


def test_trainer_and_collators_never_name_a_device_api():
    offenders = []
    for path in _python_files("trainer", "collators"):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if DEVICE_API.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    assert offenders == []


def test_no_device_name_is_tested_outside_backends():
    """Code outside backends/ asks the backend (its attributes) instead of comparing device names."""
    offenders = []
    for path in _python_files("trainer", "collators"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in DEVICE_NAMES:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert offenders == []


def test_the_layout_of_the_product_card():
    for name in ("pyproject.toml", "README.md", "backends", "trainer", "collators", "configs", "tests",
                 "scripts", "docs", ".ci/run", "__init__.py"):  # fmt: skip
        assert (REPO / name).exists(), name


def test_trainer_is_the_recipe_and_one_folder_per_part_of_a_run():
    entries = {p.name for p in (REPO / "trainer").iterdir() if p.name != "__pycache__"}
    folders = {name for name in entries if (REPO / "trainer" / name).is_dir()}
    assert entries - folders == TRAINER_MODULES, "a flat module in trainer/ belongs in one of its subpackages"
    assert folders <= TRAINER_SUBPACKAGES, folders - TRAINER_SUBPACKAGES
    assert {"common", "data", "model", "run", "commands"} <= folders


def test_every_package_and_module_says_what_it_is_for():
    missing = []
    for path in _python_files(*CODE_FOLDERS):
        if not ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))):
            missing.append(str(path.relative_to(REPO)))
    for folder in [REPO / f for f in CODE_FOLDERS] + [p for p in (REPO / "trainer").iterdir() if p.is_dir()]:
        if folder.name != "__pycache__":
            assert (folder / "__init__.py").is_file(), f"{folder.relative_to(REPO)} is not a package"
    assert missing == []


def test_pyproject_lists_exactly_the_package_folders():
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {"duotune"} | {_module_name(p) for p in _python_files(*CODE_FOLDERS) if p.name == "__init__.py"}
    assert listed == found
    scripts = config["project"]["scripts"]
    assert set(scripts) == {"train", "duotune"}
    assert all(target.startswith("duotune.") for target in scripts.values())


def _imports(path: Path) -> set[str]:
    """duotune modules a file imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("duotune")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("duotune"):
                found.add(module)
                found |= {f"{module}.{a.name}" for a in node.names}
    return found


def test_no_import_cycles():
    modules = {_module_name(p): p for p in _python_files(*CODE_FOLDERS)}
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    # a package's __init__ re-exporting its own modules is not a cycle of the architecture
    for m in graph:
        graph[m] = {i for i in graph[m] if not (modules[m].name == "__init__.py" and i.startswith(m + "."))}
        graph[m] = {i for i in graph[m] if not m.startswith(i + ".") or modules[i].name != "__init__.py"}
    cycles = []
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(" -> ".join(stack[stack.index(n) :] + [n]))
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_run_training_reads_as_the_steps_of_a_run():
    tree = ast.parse((REPO / "trainer" / "run" / "workflow.py").read_text(encoding="utf-8"))
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run_training")
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    # the steps may sit inside the `with` that holds the output_dir lock for the run
    body = [inner for s in func.body for inner in (s.body if isinstance(s, ast.With) else [s])]
    steps = [
        s.value.func.id if isinstance(s, ast.Expr) else s.value.func.id
        for s in body
        if isinstance(s, (ast.Expr, ast.Assign)) and isinstance(getattr(s, "value", None), ast.Call)
        and isinstance(s.value.func, ast.Name)
    ]  # fmt: skip
    assert len(body) <= 16, "run_training should stay a short list of steps"
    assert len(steps) >= 8 and all(step in defined for step in steps), steps


def test_cli_import_pulls_in_no_heavy_library():
    """`train --help` and recipe errors must not wait for torch (nor ever touch torch_npu)."""
    code = (
        "import sys, duotune.trainer.commands.cli; "
        "print([m for m in ('torch', 'transformers', 'peft', 'datasets', 'swanlab', 'torch_npu', 'gradio') "
        "if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(
    shutil.which("ruff", path=str(Path(sys.executable).parent)) is None, reason="ruff not installed"
)
def test_ruff_lint_and_format_are_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    for args in (["check", "."], ["format", "--check", "."]):
        proc = subprocess.run([ruff, *args], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_wheel_installs_one_top_level_name_and_runs(tmp_path):
    """Build the wheel, install it into a fresh virtualenv, check what lands in site-packages, then
    train from the installed copy (not this checkout)."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("duotune-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        top = {n.split("/", 1)[0] for n in names}
        dist_info = next(t for t in top if t.endswith(".dist-info"))
        assert zf.read(f"{dist_info}/top_level.txt").decode().split() == ["duotune"]
    assert top == {"duotune", dist_info}
    for shipped in ("duotune/configs/demo.yaml", "duotune/tests/golden/demo/trainer_log.jsonl",
                    "duotune/trainer/demo/counselling_demo.json", "duotune/backends/npu.py"):  # fmt: skip
        assert shipped in names, shipped
    assert not [n for n in names if n.startswith("duotune/tests/") and n.endswith(".py")]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    before = {p.name for p in site.iterdir()}
    subprocess.run([venv / "bin" / "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    added = {p.name for p in site.iterdir()} - before
    assert {n for n in added if not n.endswith(".dist-info")} == {"duotune"}, added
    for script in ("train", "duotune"):
        assert "duotune.trainer.commands.cli" in (venv / "bin" / script).read_text()

    # The installed copy trains: the fresh venv's site-packages first, this environment's libraries after.
    import os

    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{Path(__file__).resolve().parent}")
    code = (
        "import sys; sys.argv = ['train', 'max_steps=2', 'report_to=none', 'plot_loss=false', "
        f"'output_dir={tmp_path / 'out'}']\n"
        f"import duotune; assert duotune.__file__.startswith({str(site)!r}), duotune.__file__\n"
        "from duotune.trainer.commands.cli import train_main; train_main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
