"""Shared fixtures of the core tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from oracles.compare import assert_same_host


@pytest.fixture
def same_host() -> Callable[[Any, Any], None]:
    """Asserts that two scans of one host agree field by field."""
    return assert_same_host
