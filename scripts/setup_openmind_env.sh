#!/usr/bin/env bash
# Create the virtualenv of the openMind stack and install duotune into it (editable, with pytest):
#
#   bash scripts/setup_openmind_env.sh [VENV_DIR]      # default: .venv-openmind
#   .venv-openmind/bin/pytest                          # the whole suite on this stack, `openmind` tests included
#
# The stack: openmind 1.0.0 (Huawei's openMind Library) with transformers 4.45.2, peft 0.14.0,
# datasets 2.21.0, accelerate 1.0.1, numpy<2, pyarrow<17. openmind 1.0.0 declares Python <3.11 and pins
# setuptools 69.5.1 (which torch >= 2.6 cannot use), so openmind and openmind-hub are installed with
# --no-deps --ignore-requires-python after their real dependencies; everything else resolves normally.
# torch is pinned so pip never pulls an unrequested (multi-GB CUDA) build; on an Ascend machine keep
# the torch that matches your torch_npu instead (TORCH_SPEC="torch==2.1.0" bash scripts/...).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-openmind}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/pip" install --disable-pip-version-check -q)
"${PIP[@]}" "$TORCH_SPEC" \
    "transformers==4.45.2" "peft==0.14.0" "datasets==2.21.0" "accelerate==1.0.1" \
    "numpy<2" "pyarrow<17" "einops==0.8.0" tabulate tiktoken sentencepiece decorator \
    filelock fsspec jinja2 requests tqdm urllib3
"${PIP[@]}" --no-deps --ignore-requires-python "openmind==1.0.0" "openmind-hub==0.9.1"
"${PIP[@]}" "$TORCH_SPEC" -e ".[test]"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as m
for name in ("torch", "transformers", "peft", "datasets", "accelerate", "openmind", "openmind-hub", "numpy"):
    print(f"{name:<14}{m.version(name)}")
PY
