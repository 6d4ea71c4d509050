"""Fixtures shared by the test files (helpers to import live in tests/helpers)."""

from __future__ import annotations

import pytest

from tests.helpers import TINY, compose_config


@pytest.fixture
def tiny_cfg(tmp_path):
    def make(*overrides: str):
        return compose_config([*TINY, *overrides], run_dir=tmp_path / "run")

    return make
