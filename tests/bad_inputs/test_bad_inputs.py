"""Every case of the bad-input corpus (bad_input_corpus.py) ends the same way: exit code 2, one line on
stderr that names the culprit (file, row, key or option), no traceback, and nothing left behind.

Most cases run in this process through click's test runner (an exception other than SystemExit
escaping the command is a traceback and fails the case); a few run the real console scripts to prove
that what a user sees holds no traceback either. The good inputs the cases damage are shared by the
whole module, and the controls at the end prove each of them is accepted when it is not damaged.
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import sys
import traceback
from pathlib import Path

import pytest
from bad_input_corpus import CASES, Case, Ctx
from click.testing import CliRunner
from conftest import REPO, run_cli

pytestmark = pytest.mark.filterwarnings("ignore")
# a tqdm progress bar: "Desc: 40%|####  | 4/10 [00:01<00:02, 3.1it/s]" or "Desc: 7it [00:00, ?it/s]"
PROGRESS = re.compile(r"\d+%\|[^|]*\|\s*\d+/\d+ \[|\d+it \[[^\]]*\]")


# ---------------------------------------------------------------------------------- shared good inputs


@pytest.fixture(scope="module")
def good(tmp_path_factory, demo_model_dir) -> dict[str, Path]:
    """The demo model, a LoRA adapter of it (random non-zero weights, as after training) and a parity run."""
    import torch
    import yaml
    from duotune.trainer.model.load import save_tokenizer
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("good")
    adapter = root / "adapter"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(demo_model_dir))
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                        init_lora_weights=False)  # fmt: skip
    get_peft_model(model, config).save_pretrained(str(adapter))
    save_tokenizer(AutoTokenizer.from_pretrained(str(demo_model_dir)), adapter)
    (adapter / "run_config.yaml").write_text(
        yaml.safe_dump({"model_name_or_path": str(demo_model_dir), "cutoff_len": 128})
    )
    run = root / "run"
    shutil.copytree(REPO / "tests" / "golden" / "demo", run)
    return {"model": demo_model_dir, "adapter": adapter, "run": run}


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under folder with its size and modification time (folders: 0, 0)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink() or not p.exists():
            out[str(p.relative_to(folder))] = (-1, -1)
        elif p.is_dir():
            out[str(p.relative_to(folder))] = (0, 0)
        else:
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


# ------------------------------------------------------------------------------------------- faults


def _under(path, folder: str) -> bool:
    try:
        return os.path.abspath(os.fspath(path)).startswith(folder.rstrip("/") + "/") or os.path.abspath(
            os.fspath(path)
        ) == folder.rstrip("/")
    except TypeError:  # a file descriptor
        return False


def _readonly(monkeypatch, folder: str) -> None:
    """Make ``folder`` behave like a read-only file system (EROFS), even for root."""

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    real_open, real_os_open, real_mkdir = io.open, os.open, os.mkdir

    def fake_open(file, mode="r", *a, **kw):
        if _under(file, folder) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *a, **kw)

    def fake_os_open(path, flags, *a, **kw):
        if _under(path, folder) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *a, **kw)

    def fake_mkdir(path, *a, **kw):
        if _under(path, folder):
            refuse(path)
        return real_mkdir(path, *a, **kw)

    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr("builtins.open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def _disk_full(monkeypatch, folder: str) -> None:
    """Writes of more than a few bytes into files under ``folder`` fail with ENOSPC, after writing part."""
    real_open = io.open

    def fake_open(file, mode="r", *a, **kw):
        f = real_open(file, mode, *a, **kw)
        if _under(file, folder) and any(c in mode for c in "wax+"):
            return _FullFile(f)
        return f

    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr("builtins.open", fake_open)
    # safetensors writes from Rust: make its save fail the same way, after writing part of the file
    import safetensors.torch

    real_save = safetensors.torch.save_file

    def save_file(tensors, filename, *a, **kw):
        if _under(filename, folder):
            with real_open(filename, "wb") as f:
                f.write(b"\0" * 64)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))
        return real_save(tensors, filename, *a, **kw)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    try:
        import transformers.modeling_utils as mu

        if hasattr(mu, "safe_save_file"):
            monkeypatch.setattr(mu, "safe_save_file", save_file)
    except ImportError:  # pragma: no cover
        pass


class _FullFile:
    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[:8])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


# ------------------------------------------------------------------------------------------ running


def _prepare(case: Case, root: Path, good: dict[str, Path]) -> dict[str, str]:
    ctx = Ctx(root=root, model=good["model"], adapter=good["adapter"], run=good["run"])
    values = {"root": str(root), "model": str(good["model"]), "adapter": str(good["adapter"]),
              "run": str(good["run"])}  # fmt: skip
    if case.setup is not None:
        extra = case.setup(ctx)
        if isinstance(extra, dict):
            values.update(extra)
    return values


def _fill(text: str, values: dict[str, str]) -> str:
    for k, v in values.items():
        text = text.replace("{" + k + "}", v)
    return text


def check_outcome(case: Case, code: int, stderr: str, stdout: str, values: dict[str, str]) -> None:
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr
    assert code == 2, f"exit {code}\nstdout: {stdout[-2000:]}\nstderr: {stderr[-2000:]}"
    # progress bars (tqdm: "Tokenizing: 100%|####| 3/3 [...]") are not messages
    lines = [line for line in stderr.splitlines() if line.strip() and not PROGRESS.search(line)]
    if case.usage:  # click's own usage error: Usage / Try ... / Error: <one line>
        errors = [line for line in lines if line.startswith("Error: ")]
        assert len(errors) == 1, stderr
    else:
        assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
        errors = lines
        assert errors[0].startswith("error: "), stderr
    for needle in case.culprit:
        assert _fill(needle, values) in errors[0], f"{needle!r} not named in: {errors[0]}"


@pytest.fixture
def isolated_state(monkeypatch):
    """A case may set environment variables or block torch_npu's import; undo both afterwards."""
    saved_env = dict(os.environ)
    saved_npu = sys.modules.get("torch_npu", "absent")
    yield
    os.environ.clear()
    os.environ.update(saved_env)
    if saved_npu == "absent":
        sys.modules.pop("torch_npu", None)
    else:
        sys.modules["torch_npu"] = saved_npu


def invoke(args: list[str], *, env: dict | None = None):
    from duotune.trainer.commands.cli import duotune

    runner = CliRunner()
    result = runner.invoke(duotune, args, env=env, prog_name="duotune")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        pytest.fail(
            "an exception escaped the command (a traceback for the user):\n"
            + "".join(traceback.format_exception(*result.exc_info))
        )
    return result


def skip_if_accepted_here(case: Case) -> None:
    reason = case.skip_if() if case.skip_if else None
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, good, tmp_path, monkeypatch, isolated_state):
    skip_if_accepted_here(case)
    root = tmp_path / "case"
    root.mkdir()
    values = _prepare(case, root, good)
    args = [_fill(a, values) for a in case.args]
    monkeypatch.chdir(root)
    before, shared_before = _tree(root), {k: _tree(v) for k, v in good.items()}
    if case.inject:
        kind, _, where = case.inject.partition(":")
        {"readonly": _readonly, "diskfull": _disk_full}[kind](monkeypatch, _fill(where, values))
    try:
        result = invoke(args, env=case.env)
    finally:
        monkeypatch.undo()
    if os.environ.get("DUOTUNE_CORPUS_SHOW"):
        with open(os.environ["DUOTUNE_CORPUS_SHOW"], "a") as f:
            f.write(f"{case.id}\t{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ''}\n")
    check_outcome(case, result.exit_code, result.stderr, result.stdout, values)
    assert _tree(root) == before, "the command left files behind or changed its inputs"
    assert {k: _tree(v) for k, v in good.items()} == shared_before


def test_the_corpus_is_large_and_names_are_unique():
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)
    commands = {c.args[0] if c.args[0] != "parity" else f"parity {c.args[1]}" for c in CASES}
    assert commands >= {"train", "preview", "merge", "chat", "eval", "parity run", "parity compare", "download",
                        "env"}  # fmt: skip


# --------------------------------------------------------------------- the real console scripts

SUBPROCESS_CASES = [
    ("train", "recipe-latin1"),
    ("train", "conflict-device-flag-vs-override"),
    ("train", "model-train-weights-of-another-model"),
    ("train", "model-train-weights-wrong-shape"),
    ("duotune", "data-preview-json-top-level-object"),
    ("duotune", "output-merge-is-a-file"),
    ("duotune", "adapter-chat-config-not-json"),
    ("duotune", "output-eval-is-a-folder"),
    ("duotune", "parity-compare-log-garbage"),
    ("duotune", "download-relative-path"),
    ("duotune", "env-npu-not-available"),
]


@pytest.mark.parametrize("script, case_id", SUBPROCESS_CASES, ids=[c for _, c in SUBPROCESS_CASES])
def test_console_script_prints_one_line_and_no_traceback(script, case_id, good, tmp_path):
    case = next(c for c in CASES if c.id == case_id)
    skip_if_accepted_here(case)
    root = tmp_path / "case"
    root.mkdir()
    values = _prepare(case, root, good)
    args = [_fill(a, values) for a in case.args]
    if script == "train":
        assert args[0] == "train"
        args = args[1:]
    before = _tree(root)
    proc = run_cli(script, *args, cwd=root, env=case.env, timeout=300)
    check_outcome(case, proc.returncode, proc.stderr, proc.stdout, values)
    assert _tree(root) == before


# ------------------------------------------------------------------- controls: the good inputs work


def test_controls_the_undamaged_inputs_are_accepted(good, tmp_path, monkeypatch, isolated_state):
    """Each command accepts the shared inputs the corpus damages, so every case fails for its damage."""
    import json

    from bad_input_corpus import GOOD_ROWS

    monkeypatch.chdir(tmp_path)
    model = tmp_path / "model"
    shutil.copytree(good["model"], model)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in GOOD_ROWS))
    runs = {
        "train": ["train", "--device", "cpu", "--model", str(model), f"dataset={data}", "report_to=none",
                  "max_steps=1", "save_steps=1", f"output_dir={tmp_path}/out"],
        "preview": ["preview", "--device", "cpu", "-n", "1", "--no-color", "--jsonl", str(tmp_path / "enc.jsonl"),
                    f"dataset={data}"],
        "eval": ["eval", "--device", "cpu", "--adapter", str(good["adapter"]), "--dataset", str(data),
                 "--output", str(tmp_path / "eval.json")],
        "chat": ["chat", "--device", "cpu", "--adapter", str(good["adapter"]), "--prompt", "hi",
                 "--max-new-tokens", "2", "--greedy"],
        "merge": ["merge", "--device", "cpu", "--adapter", str(good["adapter"]), "--output-dir",
                  str(tmp_path / "merged")],
        "parity compare": ["parity", "compare", str(good["run"]), "golden:demo", "--report",
                           str(tmp_path / "report")],
        "env": ["env", "--device", "cpu"],
    }  # fmt: skip
    for name, args in runs.items():
        result = invoke(args)
        assert result.exit_code == 0, (name, result.stderr[-2000:])
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "enc.jsonl").is_file() and (tmp_path / "eval.json").is_file()
    assert (tmp_path / "merged" / "config.json").is_file()
    assert (tmp_path / "report" / "parity_report.md").is_file()


def test_eval_writes_next_to_the_adapter_never_to_the_current_directory(
    good, tmp_path, monkeypatch, isolated_state
):
    adapter = tmp_path / "adapter"
    shutil.copytree(good["adapter"], adapter)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    args = ["eval", "--device", "cpu", "--dataset", "demo://counselling", "--max-samples", "2"]
    result = invoke([*args, "--adapter", str(adapter)])
    assert result.exit_code == 0, result.stderr
    assert (adapter / "duotune_eval.json").is_file()
    result = invoke([*args, "--model", str(good["model"])])  # no adapter, no --output: printed only
    assert result.exit_code == 0, result.stderr
    assert "printed only" in result.stdout
    assert list(cwd.iterdir()) == []


def test_a_bug_in_duotune_is_not_dressed_up_as_a_user_error(monkeypatch, tmp_path):
    """Only UserError becomes a one-line exit 2: anything else escapes with its traceback (exit 1)."""
    import duotune.trainer.commands.preview as preview

    def broken(*a, **kw):
        raise KeyError("a bug")

    monkeypatch.setattr(preview, "run_preview", broken)
    monkeypatch.chdir(tmp_path)
    from duotune.trainer.commands.cli import duotune

    result = CliRunner().invoke(duotune, ["preview"])
    assert isinstance(result.exception, KeyError) and result.exit_code == 1


def test_dtype_auto_reads_the_dtype_transformers_5_writes(tmp_path, isolated_state):
    """`--dtype auto` on CPU keeps the model's own dtype, whichever key its config.json uses."""
    import json

    import torch
    from duotune.trainer.model.inference import pick_device, resolve_dtype

    backend = pick_device("cpu")
    for config, want in (({"dtype": "bfloat16"}, "bf16"), ({"torch_dtype": "float16"}, "fp16"), ({}, "fp32")):
        (tmp_path / "config.json").write_text(json.dumps(config))
        name, dtype = resolve_dtype("auto", backend, str(tmp_path))
        assert (
            name == want
            and dtype == {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[want]
        )
