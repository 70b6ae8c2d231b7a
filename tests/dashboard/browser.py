"""Debian's chromium driven by Playwright: launch options, page helpers and artifact paths."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

REPO = Path(__file__).resolve().parents[2]
STATIC_DIR = REPO / "services" / "gateway" / "static"
ARTIFACTS = REPO / "test-artifacts" / "dashboard"

# Playwright's own browser download cannot work here: always Debian's package.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    """Debian's chromium: /usr/bin/chromium, else `chromium` on PATH."""
    candidate = Path("/usr/bin/chromium")
    if candidate.exists():
        return str(candidate)
    return shutil.which("chromium")


def require_chromium() -> str:
    path = chromium_path()
    if path is None:
        pytest.skip(
            "browser tests need Debian's chromium at /usr/bin/chromium "
            "(apt-get install chromium; .ci/run installs it when missing)"
        )
    return path


@asynccontextmanager
async def launched_browser() -> AsyncIterator[Browser]:
    path = require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class PageProblems:
    """What the page complained about: uncaught errors and console errors (CSP refusals too)."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page, ignore: tuple[str, ...] = (), not_on: tuple[str, ...] = ()) -> None:
        """Record errors, except those of pages whose URL holds one of `not_on` (other sites'
        pages, such as the simulated Upstox dialog, are not ours to judge)."""

        def on_console(message: ConsoleMessage) -> None:
            if message.type != "error" or any(part in message.text for part in ignore):
                return
            if any(part in page.url for part in not_on):
                return
            where = message.location.get("url", "")
            self.errors.append(f"console: {message.text} ({where} on {page.url})")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))


async def screenshot(page: Page, name: str, *, full_page: bool = False) -> Path:
    """Save a screenshot under test-artifacts/dashboard/ (gitignored) and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full_page)
    return path


def screenshot_wanted_for_docs() -> bool:
    """Refresh docs/screenshots/dashboard.png only when asked (it is committed)."""
    return os.environ.get("TICKSTREAM_UPDATE_SCREENSHOT") == "1"
