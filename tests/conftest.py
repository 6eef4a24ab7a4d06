"""Fixtures shared by every room's tests. Plain helpers live in roost_test_support.py beside this file."""

from __future__ import annotations

import pytest
from roost_test_support import unique_loopback

__all__ = ["unique_loopback"]  # some rigs still reach it through this module


@pytest.fixture
def loopback_address() -> str:
    """A fresh loopback address whose port 8883 (and others) are free for this test."""
    return unique_loopback()
