"""charnn explain's page in a real browser: Debian's chromium, headless, driven by Selenium through
Debian's chromedriver (no browser or driver is downloaded). Skipped, with the reason shown (pytest
-rs), where either is missing; .ci/run installs them where it can.

CHARNN_SCREENSHOT=path/to/file.png keeps the screenshot there as well (the test's folder always
gets one)."""

import os
import shutil

import pytest

from conftest import run_cli

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-sync", "--window-size=1100,900"]


def missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} not found: apt-get install chromium chromium-driver to run the browser test"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[test]'"
    return None


@pytest.fixture
def browser(tmp_path, monkeypatch):
    reason = missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def colours(driver, container):
    return driver.execute_script(
        f"return Array.from(document.querySelectorAll('#{container} span')).map(s => s.style.backgroundColor)")


def test_every_view_renders_and_responds(browser, explain_run, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    ckpt_path, text = explain_run
    page = tmp_path / "page.html"
    r = run_cli("explain", ckpt_path, text, "-o", page, "--max-chars", 400, "--find", "cat")
    assert r.exit_code == 0, r.stderr
    d = browser
    d.get(page.as_uri())
    find = lambda css: d.find_elements(By.CSS_SELECTOR, css)  # noqa: E731

    # Surprisal: every character shaded; a hover shows the 5 guesses
    spans = find("#text-surprisal span")
    assert len(spans) == 400 and len(set(colours(d, "text-surprisal"))) > 3
    assert "model" in d.find_element(By.ID, "totals").text and "5-gram" in d.find_element(By.ID, "totals").text
    ActionChains(d).move_to_element(spans[30]).perform()
    tip = d.find_element(By.ID, "tip")
    assert tip.is_displayed() and len(tip.find_elements(By.CSS_SELECTOR, "li.guess")) == 5 and "bits" in tip.text
    screenshot = tmp_path / "explain.png"
    d.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("CHARNN_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["CHARNN_SCREENSHOT"])
    print(f"screenshot: {screenshot}")

    # Neurons: the next-unit button and the arrow key change the colours
    d.find_element(By.ID, "tab-neurons").click()
    assert not tip.is_displayed() and d.find_element(By.ID, "text-neurons").is_displayed()
    before = colours(d, "text-neurons")
    d.find_element(By.ID, "next").click()
    after = colours(d, "text-neurons")
    assert d.find_element(By.ID, "unit").get_attribute("value") == "1" and after != before
    d.find_element(By.TAG_NAME, "body").send_keys("\ue014")  # the right arrow key
    assert d.find_element(By.ID, "unit").get_attribute("value") == "2" and colours(d, "text-neurons") != after

    # Finder: the patterns' tables; a click opens that unit in Neurons
    d.find_element(By.ID, "tab-finder").click()
    rows = find("#finder-tables tr.found")
    assert len(rows) >= 10 and "/cat/" in d.find_element(By.ID, "finder-tables").text
    layer, _, unit = (c.text for c in rows[0].find_elements(By.TAG_NAME, "td")[1:4])
    rows[0].click()
    assert d.find_element(By.ID, "view-neurons").is_displayed()
    assert d.find_element(By.ID, "unit").get_attribute("value") == unit
    assert d.find_element(By.ID, "layer").get_attribute("value") == layer

    # Gates: one dot per gate unit, per layer, in one panel per sigmoid gate
    d.find_element(By.ID, "tab-gates").click()
    assert len(find("svg.gate-panel")) == 3 and len(find("svg.gate-panel circle")) == 3 * 2 * 16

    # Training: the curves from metrics.jsonl
    d.find_element(By.ID, "tab-training").click()
    assert find("#training-chart polyline.val-line") and find("#training-chart polyline.train-line")
    d.find_element(By.ID, "x-minutes").click()
    assert "minutes of training" in d.find_element(By.ID, "training-curves").text

    errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
