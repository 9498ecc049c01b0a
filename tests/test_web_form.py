"""The web UI's form <-> recipe mapping, its command line, its runs and its safety checks: plain Python
(no gradio, no browser), so both CI legs run these."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path
from typing import Literal

import pytest
from duotune.trainer.common.errors import UserError
from duotune.trainer.recipe import (
    Recipe,
    coerce_value,
    default_recipe_path,
    field_type,
    load_recipe,
    parse_overrides,
    recipe_fields,
)
from duotune.trainer.web import form
from duotune.trainer.web.form import (
    FormError,
    command_line,
    file_values,
    form_fields,
    from_form,
    override_text,
    overrides_for,
    recipe_from_form,
    to_form,
    train_args,
)

TRICKY_STRINGS = [
    "plain",
    "true",
    "null",
    "1e-3",
    "0x10",
    "a b",
    "x: y",
    "# not a comment",
    "中文",
    "'quoted'",
    "",
]


def _samples(key: str) -> list[typing.Any]:
    """Values of every shape the key's type allows (default included), tricky ones on purpose."""
    fld = {f.key: f for f in form_fields()}[key]
    tp = field_type(key)
    args = typing.get_args(tp)
    members = (
        [a for a in args if a is not type(None)]
        if args and typing.get_origin(tp) is not typing.Literal
        else [tp]
    )
    out: list[typing.Any] = [fld.default]
    if fld.nullable:
        out.append(None)
    for m in members:
        origin = typing.get_origin(m)
        if origin is typing.Literal:
            out += list(typing.get_args(m))
        elif origin is list:
            out += [["all"], ["q_proj", "v_proj"], ["a,b", "c"], ["true"], ["x y"]]
        elif m is bool:
            out += [True, False]
        elif m is int:
            out += [0, 7, -1, 123456]
        elif m is float:
            out += [0.0, 1e-4, 5e-3, 2e-05, 0.5, 3.0, 1234.5]
        elif m is str:
            # an empty box (or "null") means null where a key can be null, as `KEY=null` does on the CLI
            out += [s for s in TRICKY_STRINGS if not (fld.nullable and s in ("", "null"))]
    return out


@pytest.mark.parametrize("key", list(recipe_fields()))
def test_every_recipe_key_round_trips_through_the_form_and_the_command_line(key):
    """recipe value -> form component value -> recipe value, and -> `KEY=VALUE` -> the CLI's parser."""
    for value in _samples(key):
        expected = coerce_value(key, value)
        shown = to_form(key, expected)
        assert from_form(key, shown) == expected, (key, value, shown)
        text = override_text(key, expected)
        parsed = parse_overrides(shlex.split(shlex.quote(text)))[key]  # through a shell, as a user types it
        assert coerce_value(key, parsed) == expected, (key, value, text)


def test_every_recipe_key_is_a_form_field_of_the_right_kind():
    fields = {f.key: f for f in form_fields()}
    assert list(fields) == list(recipe_fields())
    assert fields["bf16"].kind == "checkbox" and fields["bf16"].default is False
    assert fields["device"].kind == "dropdown" and fields["device"].choice_labels[0] == "auto"
    assert fields["compute_type"].choices == ("auto", "bf16", "fp16", "fp32")
    assert fields["lora_rank"].kind == "number" and fields["lora_rank"].default == 8
    assert (
        fields["max_samples"].kind == "text" and fields["max_samples"].nullable
    )  # a number box can't say null
    assert fields["learning_rate"].kind == "text"  # so 2e-5 stays readable and "fast" gets the CLI's error
    assert fields["lr_scheduler_type"].suggestions[:2] == ("linear", "cosine")
    assert {f.group for f in fields.values()} == {"model", "data", "lora", "train", "speed", "tracking"}
    for f in fields.values():
        assert f.help == recipe_fields()[f.key].metadata["help"]  # one source of truth for the help


def test_a_new_recipe_key_appears_in_the_form_with_its_type_default_choices_and_help(monkeypatch):
    import dataclasses

    from duotune.trainer import recipe as recipe_module

    @dataclasses.dataclass
    class Extended(Recipe):
        rope_kernel: Literal["auto", "triton", "sdpa", "eager"] = dataclasses.field(
            default="auto", metadata={"help": "Rotary kernel choice.", "group": "model"}
        )
        shuffle_rows: bool = dataclasses.field(
            default=False, metadata={"help": "Shuffle rows.", "group": "data"}
        )
        fused_loss: bool | Literal["auto"] = dataclasses.field(
            default="auto", metadata={"help": "No padding.", "group": "train"}
        )

    monkeypatch.setattr(recipe_module, "Recipe", Extended)
    monkeypatch.setattr(recipe_module, "_TYPE_HINTS", None)
    monkeypatch.setattr(form, "recipe_fields", lambda: {f.name: f for f in dataclasses.fields(Extended)})
    monkeypatch.setattr(
        recipe_module, "recipe_fields", lambda: {f.name: f for f in dataclasses.fields(Extended)}
    )
    form._CACHE.clear()
    try:
        fields = {f.key: f for f in form_fields()}
        assert fields["rope_kernel"].kind == "dropdown" and fields["rope_kernel"].choice_labels == [
            "auto",
            "triton",
            "sdpa",
            "eager",
        ]
        assert fields["rope_kernel"].help == "Rotary kernel choice." and not fields["rope_kernel"].basic
        assert fields["shuffle_rows"].kind == "checkbox" and fields["shuffle_rows"].group == "data"
        assert fields["fused_loss"].kind == "dropdown"
        assert fields["fused_loss"].choice_labels == ["true", "false", "auto"]
        assert from_form("fused_loss", "false") is False and from_form("fused_loss", "auto") == "auto"
        assert override_text("fused_loss", False) == "fused_loss=false"
    finally:
        form._CACHE.clear()


def test_every_recipe_key_has_an_english_and_a_chinese_label_and_help():
    from duotune.trainer.web.locales import RECIPE, recipe_help, recipe_label

    for key, f in recipe_fields().items():
        assert key in RECIPE, f"{key}: add its labels and Chinese help to trainer/web/locales.py"
        assert (
            recipe_label(key, "en") and recipe_label(key, "zh") and recipe_help(key, "zh", f.metadata["help"])
        )
        assert recipe_help(key, "en", f.metadata["help"]) == f.metadata["help"].replace("`", "")
        assert any("\u4e00" <= ch <= "\u9fff" for ch in recipe_help(key, "zh", "")), key


def test_invalid_values_give_the_clis_message_inline():
    with pytest.raises(FormError, match=r"^expected a finite number, got 'fast'$"):
        from_form("learning_rate", "fast")
    with pytest.raises(FormError, match="expected an integer"):
        from_form("lora_rank", None)
    values, errors = recipe_from_form({"learning_rate": "fast", "lora_rank": 4, "max_samples": "lots"})
    assert set(errors) == {"learning_rate", "max_samples"} and values == {"lora_rank": 4}
    # the CLI says the same about the same text
    with pytest.raises(UserError) as e:
        load_recipe(None, parse_overrides(["learning_rate=fast"]))
    assert "'learning_rate' (command line): expected a finite number, got 'fast'" in str(e.value)


def test_the_form_of_the_demo_recipe_is_the_bare_train_command():
    base, problems = file_values(default_recipe_path())
    assert problems == []
    form_values = {k: to_form(k, v) for k, v in base.items()}
    values, errors = recipe_from_form(form_values)
    assert errors == {} and overrides_for(base, values) == []
    assert command_line(train_args(default_recipe_path(), [])) == "train"
    values.update(max_steps=4, learning_rate=2e-4, experiment_name="my run", lora_target=["q_proj", "v_proj"])
    overrides = overrides_for(base, values)
    assert overrides == [
        "lora_target=q_proj,v_proj",
        "learning_rate=0.0002",
        "max_steps=4",
        "experiment_name=my run",
    ]  # in the recipe's order, only what differs from the file
    line = command_line(train_args(default_recipe_path(), overrides, "2"))
    assert (
        line
        == "train --nproc 2 lora_target=q_proj,v_proj learning_rate=0.0002 max_steps=4 'experiment_name=my run'"
    )
    # the line means, to the CLI, exactly the recipe of the form
    cli_recipe, _ = load_recipe(None, parse_overrides(shlex.split(line)[3:]))
    assert cli_recipe == Recipe(**{**base, **values, "report_to": ["swanlab"]})


def test_a_recipe_file_of_ones_own_is_named_on_the_command_line(tmp_path):
    mine = tmp_path / "my recipe.yaml"
    mine.write_text("model_name_or_path: demo://tiny-llama\ndataset: demo://counselling\nlora_rank: 4\n")
    base, problems = file_values(mine)
    assert base["lora_rank"] == 4 and base["cutoff_len"] == 2048  # the dataclass default fills in
    assert problems == [f"recipe {mine}: 'output_dir': is required, got ''"]  # one problem, one line
    assert form.problems_by_key(problems) == {"output_dir": "'output_dir': is required, got ''"}
    args = train_args(mine, overrides_for(base, {**base, "output_dir": "out"}))
    assert command_line(args) == f"train --config '{mine}' output_dir=out"
    with pytest.raises(UserError, match="does not exist"):
        file_values(tmp_path / "missing.yaml")


def test_cli_problem_lines_are_mapped_to_their_fields():
    lines = [
        "recipe x.yaml: 2 problems (fix them and run again)",
        "  - 'learning_rate' (command line): expected a finite number, got 'fast'",
        "  - 'lora_rank': must be > 0, got -1",
    ]
    assert form.problems_by_key(lines) == {
        "learning_rate": "'learning_rate' (command line): expected a finite number, got 'fast'",
        "lora_rank": "'lora_rank': must be > 0, got -1",
    }


# ---------------------------------------------------------------------------------------------------
# the server's exposure rules


def test_the_ui_is_served_beyond_this_machine_only_with_a_login(tmp_path):
    from duotune.trainer.web.server import check_exposure, is_loopback, read_auth

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("myhost")
    check_exposure("127.0.0.1", False, None)
    with pytest.raises(UserError, match=r"^--host 0\.0\.0\.0 makes the UI reachable from other machines"):
        check_exposure("0.0.0.0", False, None)
    with pytest.raises(UserError, match=r"^--share publishes the UI"):
        check_exposure("127.0.0.1", True, None)
    check_exposure("0.0.0.0", True, [("u", "p")])
    assert read_auth("ann:s3cret:with:colons", None) == [("ann", "s3cret:with:colons")]
    f = tmp_path / "logins"
    f.write_text("# users\nann:one\n\nbob:two\n")
    assert read_auth(None, str(f)) == [("ann", "one"), ("bob", "two")]
    f.write_text("ann:one\nbob-without-password\n")
    with pytest.raises(UserError) as e:
        read_auth(None, str(f))
    assert str(e.value) == f"--auth-file {f} line 2: expected USER:PASS with a non-empty user and password"
    with pytest.raises(UserError, match="does not exist"):
        read_auth(None, str(tmp_path / "nope"))
    with pytest.raises(UserError, match="not both"):
        read_auth("a:b", str(f))


def test_web_refuses_a_public_host_without_a_login_before_importing_gradio(tmp_path):
    code = (
        "import sys\n"
        "from duotune.trainer.commands.cli import duotune\n"
        "try:\n"
        "    duotune(['web', '--host', '0.0.0.0', '--port', '7999'], prog_name='duotune')\n"
        "finally:\n"
        "    print('gradio imported:', 'gradio' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --host 0.0.0.0 makes the UI reachable from other machines")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert proc.stdout.strip() == "gradio imported: False"


# ---------------------------------------------------------------------------------------------------
# runs: started detached, read back from output_dir, aborted


def test_console_tail_and_errors_read_as_the_terminal_shows_them(tmp_path):
    from duotune.trainer.web.monitor import console_tail, error_lines

    (tmp_path / "console.log").write_bytes(
        b"[duotune web] 2025 $ train old\nold output\n"
        b"[duotune web] 2025 $ train max_steps=2\n 10%|#  | 1/10\r 20%|## | 2/10\r 30%|###| 3/10\n"
        b"error: recipe configs/demo.yaml: 2 problems (fix them and run again)\n"
        b"  - 'lora_rank': must be > 0, got -1\n  - 'seed': must be >= 0, got -1\n"
    )
    tail = console_tail(tmp_path)
    assert tail[0] == "[duotune web] 2025 $ train max_steps=2" and " 30%|###| 3/10" in tail
    assert "old output" not in tail
    assert error_lines(tail) == (
        "error: recipe configs/demo.yaml: 2 problems (fix them and run again)\n"
        "  - 'lora_rank': must be > 0, got -1\n  - 'seed': must be >= 0, got -1"
    )
    assert (
        error_lines(["Traceback (most recent call last):", '  File "x"', "ValueError: boom"])
        == "ValueError: boom"
    )
    assert error_lines(["all fine"]) is None


def test_run_state_comes_from_the_output_dir(tmp_path):
    from duotune.trainer.web.monitor import list_runs, read_run

    out = tmp_path / "saves" / "r1"
    out.mkdir(parents=True)
    rows = [
        {"current_steps": 1, "total_steps": 4, "loss": 6.0, "learning_rate": 1e-3, "elapsed_time": "0:00:02",
         "remaining_time": "0:00:06"},
        {"current_steps": 2, "total_steps": 4, "loss": 5.5, "learning_rate": 9e-4, "elapsed_time": "0:00:04",
         "remaining_time": "0:00:04", "real_tokens_per_second": 1930.0, "padding_fraction": 0.008},
        {"current_steps": 2, "total_steps": 4, "eval_loss": 5.9, "elapsed_time": "0:00:05", "remaining_time": "0:00:05"},
    ]  # fmt: skip
    (out / "trainer_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"current_st')
    (out / "checkpoint-2").mkdir()
    (out / "checkpoint-2" / ".duotune-complete").write_text("{}")
    (out / "checkpoint-4").mkdir()  # being written: not complete
    st = read_run(out)
    assert (st.status, st.step, st.total, st.percent) == ("interrupted", 2, 4, 50.0)
    assert st.final_loss == 5.5 and st.final_eval_loss == 5.9 and st.elapsed == "0:00:05"
    assert st.throughput == {"real_tokens_per_second": 1930.0, "padding_fraction": 0.008}
    assert [p.name for p in st.checkpoints] == ["checkpoint-2"]
    (out / "run_status.json").write_text(
        json.dumps(
            {
                "status": "failed",
                "step": 2,
                "total_steps": 4,
                "exit_code": 2,
                "pid": 1,
                "host": "x",
                "message": "error: dataset 'x.json' does not exist",
            }
        )  # fmt: skip
    )
    st = read_run(out)
    assert (st.status, st.exit_code, st.message) == ("failed", 2, "error: dataset 'x.json' does not exist")
    assert [s.output_dir for s in list_runs(tmp_path / "saves")] == [out]
    assert read_run(tmp_path / "nothing").status == "none"


def test_a_run_started_from_the_ui_outlives_its_server_and_is_read_back(tmp_path):
    """The web runner starts train in its own session: killing the process that started it (as closing
    the server does) leaves the run going, and a fresh reader finds its progress in output_dir."""
    out = tmp_path / "saves" / "detached"
    script = (
        "import sys, time\n"
        "from duotune.trainer.web import runner\n"
        f"run = runner.start({str(out)!r}, ['max_steps=3', 'report_to=none', 'plot_loss=false', 'save_steps=1', "
        f"'output_dir={out}', '--device', 'cpu'], 'train ...', secrets={{'HF_TOKEN': 'hf_SECRETtoken123'}})\n"
        "print(run.popen.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    server = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    train_pid = int(server.stdout.readline())
    environ = Path(f"/proc/{train_pid}/environ").read_bytes().split(b"\0")
    assert b"HF_TOKEN=hf_SECRETtoken123" in environ  # the token reaches the run through its environment...
    cmdline = Path(f"/proc/{train_pid}/cmdline").read_bytes()
    assert b"hf_SECRET" not in cmdline  # ...and never its command line
    server.send_signal(signal.SIGKILL)  # the web server dies
    server.wait()
    from duotune.trainer.web.monitor import read_run

    deadline = time.time() + 300
    while time.time() < deadline:
        st = read_run(out)
        if st.status == "completed" or not Path(f"/proc/{train_pid}").exists():
            break
        time.sleep(1)
    assert st.status == "completed", st.tail[-10:]
    assert (st.step, st.total, st.percent) == (3, 3, 100.0)
    assert [p.name for p in st.checkpoints] == ["checkpoint-2", "checkpoint-3"]  # the demo keeps two
    log = (out / "console.log").read_text()
    assert log.startswith("[duotune web] ") and "$ train ..." in log and "done:" in log
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"hf_SECRET" not in path.read_bytes(), path


def test_launcher_passes_sigterm_on_to_torchrun(monkeypatch):
    """`train --nproc N` waits on torchrun; a SIGTERM to it (the UI's abort, a scheduler) reaches
    torchrun, which stops the workers gracefully, instead of killing the launcher alone."""
    from duotune.trainer.run import launch

    sent = []

    class FakeTorchrun:
        def __init__(self, cmd, env):
            self.cmd = cmd

        def poll(self):
            return None

        def send_signal(self, sig):
            sent.append(sig)

        def wait(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handler runs in the main thread, here
            return 143

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(launch.subprocess, "Popen", FakeTorchrun)
    assert launch.relaunch(2, ["train"]) == 143
    assert sent == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_ui_refuses_an_output_dir_another_run_holds_with_the_clis_message(tmp_path):
    from duotune.trainer.run.lock import OutputDirLock
    from duotune.trainer.web import runner

    out = tmp_path / "busy"
    with OutputDirLock(out, command="train output_dir=busy"):
        with pytest.raises(UserError) as e:
            runner.start(out, ["max_steps=1"], "train max_steps=1")
        assert runner.launched(out) is None
    assert str(e.value).startswith(f"output_dir {out} is in use by another run (pid {os.getpid()} on ")
    assert str(e.value).endswith(
        "`train output_dir=busy`); wait for it to finish, stop it, or choose another output_dir"
    )
    assert not out.exists()  # nothing was started, nothing was written (the lock's folder is gone again)


# ---------------------------------------------------------------------------------------------------
# the form checked as `train` checks it


def _demo_form(**changes):
    base, _ = file_values(default_recipe_path())
    form_values = {k: to_form(k, v) for k, v in base.items()}
    form_values.update(changes)
    return form_values


def test_start_refuses_what_train_refuses_in_its_words_and_names_the_fields(tmp_path):
    from duotune.trainer.web.checks import Invalid, prepare_run

    with pytest.raises(Invalid) as bad:
        prepare_run(None, None, _demo_form(learning_rate="fast", lora_rank=-1), for_start=True)
    assert bad.value.command == "train lora_rank=-1 learning_rate=fast"
    assert bad.value.lines == [
        "recipe " + str(default_recipe_path()) + ": 2 problems (fix them and run again)",
        "  - 'learning_rate' (command line): expected a finite number, got 'fast'",
        "  - 'lora_rank': must be > 0, got -1",
    ]  # what `train lora_rank=-1 learning_rate=fast` prints
    assert set(bad.value.errors) == {"learning_rate", "lora_rank"}

    missing = tmp_path / "nope.json"
    with pytest.raises(Invalid) as bad:
        prepare_run(
            None, None, _demo_form(dataset=str(missing), output_dir=str(tmp_path / "o")), for_start=True
        )
    assert bad.value.lines == [
        f"dataset '{missing}' does not exist (relative paths are read from the current directory)"
    ]
    assert list(bad.value.errors) == ["dataset"]
    # the same form is fine for a preview of the command (paths are checked when it starts)
    args, cmd, yaml_text, recipe = prepare_run(None, "1", _demo_form(dataset=str(missing)), for_start=False)
    assert cmd == command_line(["dataset=" + str(missing)]) and recipe.dataset == [str(missing)]


def test_start_checks_the_output_dir_and_the_checkpoint_as_train_does(tmp_path):
    from duotune.trainer.web.checks import Invalid, prepare_run

    out = tmp_path / "used"
    (out / "checkpoint-3").mkdir(parents=True)
    with pytest.raises(Invalid) as bad:
        prepare_run(None, None, _demo_form(output_dir=str(out), overwrite_output_dir=False), for_start=True)
    assert bad.value.lines[0].startswith(f"output_dir {out} already holds a run (checkpoint-3, ...)")
    assert list(bad.value.errors) == ["output_dir"]
    form_values = _demo_form(output_dir=str(out), resume_from_checkpoint=str(out / "checkpoint-3"))
    with pytest.raises(Invalid) as bad:
        prepare_run(None, None, form_values, for_start=True)
    assert bad.value.lines[0].startswith(
        f"resume_from_checkpoint {out / 'checkpoint-3'} is not a checkpoint folder"
    )
    assert list(bad.value.errors) == ["resume_from_checkpoint"]


def test_model_source_and_hub_cache_state(tmp_path, monkeypatch):
    from duotune.trainer.web.info import model_source_info

    text, err = model_source_info({"model_name_or_path": "demo://tiny-llama"})
    assert err is None and text.startswith("**Bundled demo model**")
    text, err = model_source_info({"model_name_or_path": str(tmp_path / "no-model")})
    assert text == "" and err.startswith(f"model_name_or_path '{tmp_path / 'no-model'}': no such folder")

    cache = tmp_path / "hf-cache"
    snap = cache / "models--acme--tiny" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (cache / "models--acme--tiny" / "refs").mkdir()
    (cache / "models--acme--tiny" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text, err = model_source_info({"model_name_or_path": "hf://acme/tiny", "cache_dir": str(cache)})
    assert err is None
    assert text.splitlines()[0] == "**Hugging Face hub** `acme/tiny` (hub chosen by: hf:// prefix)."
    assert f"In the local cache: `{snap}`" in text and "Offline mode is on (HF_HUB_OFFLINE=1)" in text
    text, _ = model_source_info({"model_name_or_path": "hf://acme/other", "cache_dir": str(cache)})
    assert "⚠ Not in the local cache and HF_HUB_OFFLINE=1 forbids downloading" in text
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    text, _ = model_source_info({"model_name_or_path": "acme/other", "hub": "hf", "cache_dir": str(cache)})
    assert "downloaded from the Hugging Face hub when the run starts" in text


def test_device_and_dataset_information(tmp_path):
    from duotune.trainer.web.info import dataset_info, device_info

    text, nmax, err = device_info("auto")
    assert err is None and nmax >= 1
    assert "✓ **cpu**: always available" in text and "→ cpu" in text
    assert "✗ **npu**" in text  # and why it is unusable, as `duotune env` says
    text, err = dataset_info({"dataset": ["demo://counselling"], "dataset_format": "auto"})
    assert (
        err is None and text == "- `demo://counselling`: **conversation** (detected), 96 rows read, 96 used"
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "hi", "output": "hello"}\n{"instruction": "x"}\n')
    text, err = dataset_info({"dataset": [str(bad)], "dataset_format": "auto"})
    assert (
        err
        == f"{bad} line 2: field output is missing (alpaca format); fix the row or set skip_invalid_rows: true"
    )
    text, err = dataset_info({"dataset": [str(bad)], "dataset_format": "auto", "skip_invalid_rows": True})
    assert text == f"- `{bad}`: **alpaca** (detected), 2 rows read, 1 used, 1 skipped"


def test_a_saved_recipe_runs_as_the_form_stands_and_holds_no_secret(tmp_path):
    from duotune.trainer.web.checks import Invalid, save_recipe

    form_values = _demo_form(max_steps=3, experiment_name="true", lora_target="q_proj, v_proj")
    path = save_recipe(form_values, tmp_path / "mine.yaml")
    saved, _ = load_recipe(path)
    expected, _ = load_recipe(
        None, parse_overrides(["max_steps=3", "experiment_name='true'", "lora_target=q_proj,v_proj"])
    )
    assert saved == expected
    assert path.read_text().startswith(f"# saved by duotune web; run it with: train --config {path}\n")
    with pytest.raises(UserError, match="is a folder"):
        save_recipe(form_values, tmp_path)
    with pytest.raises(Invalid):
        save_recipe(_demo_form(learning_rate="fast"), tmp_path / "bad.yaml")
    assert not (tmp_path / "bad.yaml").exists()


def test_a_secret_looking_recipe_key_is_masked_wherever_the_ui_shows_the_command():
    assert command_line(["output_dir=o", "hub_token=hf_abc", "swanlab_api_key=k1"]) == (
        "train output_dir=o 'hub_token=***' 'swanlab_api_key=***'"
    )


def test_the_last_started_run_is_remembered_per_folder_without_secrets(tmp_path, monkeypatch):
    from duotune.trainer.web import runner

    monkeypatch.setenv("DUOTUNE_CACHE", str(tmp_path / "cache"))
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(here)
    assert runner.last_started() is None
    runner.remember("my.yaml", ["output_dir=saves/x", "hub_token=hf_SECRET1", "max_steps=3"], "2")
    last = runner.last_started()
    assert (last["config"], last["overrides"], last["nproc"]) == (
        "my.yaml",
        ["output_dir=saves/x", "max_steps=3"],
        "2",
    )
    assert b"hf_SECRET1" not in (tmp_path / "cache" / "web" / "web_last_run.json").read_bytes()
    monkeypatch.chdir(elsewhere)
    assert runner.last_started() is None  # relative paths from another folder would point elsewhere
