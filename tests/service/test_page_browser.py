"""The search page at GET / in a real headless Chromium, against the real app served by uvicorn.

No Ray and no model artifact: DummyBackend behind the real EmbedService and FastAPI app. The module
is skipped (never failed) when chromium or chromedriver is not installed.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

XSS_QUESTION = "<img src=x onerror=\"document.title='pwned'\">How do I reset my password?"
STORED: list[dict[str, Any]] = [
    {
        "id": "faq-1",
        "question": XSS_QUESTION,
        "answer": "Use the 'Forgot password' link on the sign-in page.",
    },
    {
        "id": "faq-2",
        "question": "How can I cancel my subscription?",
        "answer": "Open Billing and press Cancel.",
    },
    {
        "id": "faq-3",
        "question": "Where is my invoice for last month?",
        "answer": "Invoices are under Billing.",
    },
    {"id": "faq-4", "question": "Do you ship to Canada?", "answer": "Yes, within 5 working days."},
]
API_KEY = "secret-key"
WAIT_S = 10.0
PAGE_TITLE = "Question matching"


def _browser_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
    )
    if browser is None or driver is None:
        pytest.skip(
            "headless browser test needs chromium and chromedriver "
            f"(found chromium={browser!r}, chromedriver={driver!r}); "
            "install them with: apt-get install chromium chromium-driver"
        )
    return browser, driver


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """The real app on 127.0.0.1 (free port) in a background thread; stopped after the module."""
    _browser_paths()  # skip before starting anything when there is no browser
    import uvicorn

    from service.config import ServingConfig
    from service.core import EmbedService
    from service.http import create_app
    from testkit.dummy_backend import DummyBackend

    app = create_app(EmbedService(DummyBackend(stored=STORED), ServingConfig(api_key=API_KEY)))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # the port is ours from here on: no race with other processes
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port} within {WAIT_S:g}s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=WAIT_S)
        sock.close()


@pytest.fixture(scope="module")
def driver(base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium with a fresh profile and no background network traffic."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    browser, chromedriver = _browser_paths()
    options = Options()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        drv = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    except WebDriverException as exc:
        pytest.skip(f"chromium/chromedriver are installed but could not start a headless session: {exc.msg}")
    drv.set_page_load_timeout(WAIT_S)
    drv.set_script_timeout(WAIT_S)
    try:
        yield drv
    finally:
        drv.quit()


def _search(driver: Any, base_url: str, key: str, question: str) -> None:
    """Load the page fresh, fill the key and the question, and submit with Enter (not the button)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(base_url)
    assert driver.title == PAGE_TITLE
    key_field = driver.find_element(By.ID, "key")
    key_field.clear()
    key_field.send_keys(key)
    q = driver.find_element(By.ID, "q")
    q.clear()
    q.send_keys(question)
    q.send_keys(Keys.ENTER)


def _wait_for(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def found(d: Any) -> list[Any] | Literal[False]:
        if css != "#error" and d.find_elements(By.CSS_SELECTOR, "#out .err"):
            raise AssertionError(f"the page shows an error: {d.find_element(By.ID, 'out').text}")
        return d.find_elements(By.CSS_SELECTOR, css) or False

    return WebDriverWait(driver, WAIT_S).until(found, f"no {css!r} on the page within {WAIT_S:g}s")


def _uncaught_errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if "Uncaught" in e.get("message", "")]


def test_enter_submits_and_shows_the_best_match(driver: Any, base_url: str) -> None:
    _search(driver, base_url, API_KEY, "how can I cancel my subscription?")
    matches = _wait_for(driver, ".match")
    from selenium.webdriver.common.by import By

    best = matches[0].find_element(By.TAG_NAME, "b")
    assert best.text == "How can I cancel my subscription?"
    assert "Open Billing and press Cancel." in matches[0].text
    assert "index v1" in driver.find_element(By.ID, "meta").text
    assert _uncaught_errors(driver) == []


def test_stored_markup_is_shown_as_text_not_run(driver: Any, base_url: str) -> None:
    from selenium.webdriver.common.by import By

    _search(driver, base_url, API_KEY, "How do I reset my password?")
    matches = _wait_for(driver, ".match")
    shown = [m for m in matches if "<img src=x" in m.text]
    assert shown, f"the stored question's markup is not shown as text: {[m.text for m in matches]}"
    assert shown[0].find_element(By.TAG_NAME, "b").text == XSS_QUESTION
    assert driver.find_elements(By.CSS_SELECTOR, "#out img") == []
    # Barrier: a control <img src=x> added now fails to load; once its error event has fired, an
    # injected one (added earlier, same URL) would have fired its onerror too.
    fired = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const img = document.createElement("img");
        img.onerror = () => { img.remove(); done(true); };
        img.onload = () => { img.remove(); done(false); };
        img.src = "x?control";
        document.body.appendChild(img);
        """
    )
    assert fired is True
    assert driver.title == PAGE_TITLE  # not 'pwned'
    assert _uncaught_errors(driver) == []


def test_wrong_key_shows_a_readable_error(driver: Any, base_url: str) -> None:
    from selenium.webdriver.common.by import By

    _search(driver, base_url, "wrong-key", "Do you ship to Canada?")
    _wait_for(driver, "#error")
    text = driver.find_element(By.ID, "error").text
    assert "401" in text and "API key" in text, text
    assert driver.find_elements(By.CSS_SELECTOR, ".match") == []
    assert _uncaught_errors(driver) == []
