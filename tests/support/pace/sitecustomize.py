"""Test-only pacing of training steps, for tests that must act while a run is still going.

A test puts this folder on PYTHONPATH of the process it starts; Python imports ``sitecustomize`` at
start-up, and this one wraps ``transformers.Trainer.training_step`` once transformers' trainer module is
loaded (nothing is imported early). Two environment variables steer it:

- ``DUOTUNE_TEST_STEP_SECONDS``: sleep this long before every training step (a slow machine's pace on a
  fast one);
- ``DUOTUNE_TEST_HOLD``: a file path; every training step waits while that file exists.

Without either variable the hook does nothing. It is never installed with the package.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
import time

_TARGET = "transformers.trainer"


def _paced(step):
    seconds = float(os.environ.get("DUOTUNE_TEST_STEP_SECONDS") or 0)
    hold = os.environ.get("DUOTUNE_TEST_HOLD")

    def training_step(self, *args, **kwargs):
        if seconds:
            time.sleep(seconds)
        while hold and os.path.exists(hold):
            time.sleep(0.02)
        return step(self, *args, **kwargs)

    return training_step


class _Loader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        module.Trainer.training_step = _paced(module.Trainer.training_step)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            from importlib.util import find_spec

            spec = find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


if os.environ.get("DUOTUNE_TEST_STEP_SECONDS") or os.environ.get("DUOTUNE_TEST_HOLD"):
    sys.meta_path.insert(0, _Finder())
