"""Fixtures for the dashboard's browser tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser

from tests.dashboard.browser import launched_browser


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A fresh headless chromium for one test (skips with a reason when chromium is missing)."""
    async with launched_browser() as launched:
        yield launched
