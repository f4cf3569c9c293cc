"""Headless Chromium for tests of pages: Debian's chromium, driven by Selenium through Debian's chromedriver.

Nothing is downloaded: the browser and its driver are the packages ``make test`` installs. Each
browser gets a fresh profile, no background traffic of its own (sync, updates, QUIC probes), and
a log of every request its pages made, so a test can say that nothing left the page's origin.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

from tests.services import find_binary

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


@contextlib.contextmanager
def chromium() -> Iterator[WebDriver]:
    """A headless Chromium with a fresh profile; quit (and its profile removed) after."""
    browser, driver = find_binary("chromium"), find_binary("chromedriver")
    with tempfile.TemporaryDirectory(prefix="citygw-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        # With the driver's path given, Selenium never runs Selenium Manager (which could download one).
        session = webdriver.Chrome(options=options, service=Service(driver, log_output=os.devnull))
        try:
            yield session
        finally:
            session.quit()


class Requests(NamedTuple):
    sent: list[str]
    blocked: list[str]  # refused by the browser before leaving (Content-Security-Policy, ...)


def requests_of(session: WebDriver, origin: str) -> Requests:
    """What pages of ``origin`` asked for since the last call (from the DevTools network log).

    Requests of the browser's own pages (the new-tab page it opens with, ``chrome://``) are not theirs.
    """
    asked: dict[str, str] = {}
    blocked: set[str] = set()
    for entry in session.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message["params"]
        if message["method"] == "Network.requestWillBeSent":
            if _origin(params.get("documentURL", "")) == _origin(origin):
                asked[params["requestId"]] = params["request"]["url"]
        elif message["method"] == "Network.loadingFailed" and params.get("blockedReason"):
            blocked.add(params["requestId"])
    return Requests(
        sent=[url for request, url in asked.items() if request not in blocked],
        blocked=[url for request, url in asked.items() if request in blocked],
    )


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def console_errors(session: WebDriver) -> list[str]:
    """The page's console messages of level SEVERE since the last call (script errors, failed loads)."""
    return [entry["message"] for entry in session.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(session: WebDriver, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    session.save_screenshot(str(path))
