"""Headless Chromium (Debian's) driven by selenium with explicit paths: nothing is downloaded.

``open_offline(path)`` loads a page from ``file://`` with the network off (a dead proxy, no
background networking, host names unresolvable) and returns what a person would check: console
messages, every request the page made, and the driver for further checks.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = os.environ.get("LISTCOPY_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LISTCOPY_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")


def available() -> str | None:
    """None if the browser test can run, else why not."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).is_file():
            return f"{path} not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed"
    return None


@contextmanager
def chromium(width: int = 1400, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager, were it asked: never download
    profile = tempfile.mkdtemp(prefix="listcopy-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps", "--no-first-run",
                "--disable-extensions", "--enable-unsafe-swiftshader",
                "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                "--host-resolver-rules=MAP * ~NOTFOUND",
                f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def requests(driver) -> list[str]:
    """URLs of every request the page made (from the DevTools performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def load_offline(driver, path: Path, timeout: float = 600.0) -> dict:
    """Open ``path`` from ``file://`` and wait until every figure has been drawn (or ``timeout``).

    Returns the console messages and the URLs of the requests made since the page was asked for.
    """
    import time

    driver.get_log("performance")  # drain what the browser's start page did
    driver.get_log("browser")
    driver.get(Path(path).resolve().as_uri())
    deadline = time.monotonic() + timeout
    script = ("return document.readyState === 'complete' && "
              "document.querySelectorAll('.figure:not([data-rendered])').length === 0")
    while not driver.execute_script(script):
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return {"console": driver.get_log("browser"), "requests": requests(driver)}


def full_page_screenshot(driver, path: Path) -> Path:
    """The whole page, top to bottom, as one PNG."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.execute_script("return document.documentElement.scrollWidth")
    driver.set_window_size(max(width, 1400), min(height + 120, 16000))
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path


NETWORK_SCHEMES = ("http:", "https:", "ws:", "wss:", "ftp:")
PAGE_SCHEMES = ("file:", "data:", "blob:")


def network_requests(urls: list[str]) -> list[str]:
    """The requests that would have left the machine."""
    return [u for u in urls if u.lower().startswith(NETWORK_SCHEMES)]
