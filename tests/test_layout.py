"""Structure rules: device-specific code lives in backends/ only."""

from __future__ import annotations

import re

from conftest import REPO

FORBIDDEN = re.compile(r"torch\.cuda|torch\.npu|torch_npu")


def test_trainer_and_collators_never_name_a_device_api():
    offenders = []
    for folder in ("trainer", "collators"):
        for path in (REPO / folder).rglob("*.py"):
            for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if FORBIDDEN.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    assert offenders == []


def test_the_layout_of_the_product_card():
    for name in (
        "pyproject.toml",
        "README.md",
        "backends",
        "trainer",
        "collators",
        "configs",
        "tests",
        "scripts",
        ".ci/run",
    ):
        assert (REPO / name).exists(), name
