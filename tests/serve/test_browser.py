"""The explorer page in a real headless Chromium (selenium) against a live loopback server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from procvision.serve import MemoryState, ServeConfig, create_app
from procvision.serve.live import serve_in_thread
from tests.serve.conftest import TOKEN, query_png

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="headless Chromium not installed: apt-get install -y chromium chromium-driver (make test does)",
)


def chrome(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,900", f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


def test_page_upload_neighbours_forget_and_gone(memdir, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    query = tmp_path / "query.png"
    query.write_bytes(query_png("red", 5))
    app = create_app(MemoryState(memdir), ServeConfig(token=TOKEN))
    with serve_in_thread(app) as url:
        driver = chrome(tmp_path)
        try:
            wait = WebDriverWait(driver, 30)
            driver.get(url + "/")
            wait.until(lambda d: "12 items" in d.find_element(By.ID, "memory-info").text)
            driver.find_element(By.ID, "file-input").send_keys(str(query))
            wait.until(
                lambda d: len(d.find_elements(By.CSS_SELECTOR, "#neighbours .neighbour")) == 12
            )
            assert driver.find_element(By.ID, "prediction").text == "red"
            wait.until(lambda d: d.execute_script(
                "return [...document.querySelectorAll('#neighbours img')].every(i => i.complete && i.naturalWidth > 0)"))  # fmt: skip
            cards = driver.find_elements(By.CSS_SELECTOR, "#neighbours .neighbour")
            target = cards[0].get_attribute("data-id")
            assert "red" in cards[0].text
            driver.save_screenshot(str(tmp_path / "1_neighbours.png"))
            cards[0].click()  # the item panel
            wait.until(lambda d: d.find_element(By.ID, "item-id").text.startswith(target))
            cards[0].find_element(By.CSS_SELECTOR, "input.select").click()
            driver.find_element(By.ID, "token").send_keys(TOKEN)
            driver.find_element(By.ID, "reason").send_keys("browser test")
            button = driver.find_element(By.ID, "forget-btn")
            assert button.text == "Forget selected (1)"
            button.click()
            wait.until(lambda d: "forgot 1 item" in d.find_element(By.ID, "status").text)
            wait.until(lambda d: "11 items" in d.find_element(By.ID, "memory-info").text)
            wait.until(
                lambda d: len(d.find_elements(By.CSS_SELECTOR, "#neighbours .neighbour")) == 11
            )
            ids = [
                c.get_attribute("data-id")
                for c in driver.find_elements(By.CSS_SELECTOR, "#neighbours .neighbour")
            ]
            assert target not in ids
            rows = driver.find_elements(By.CSS_SELECTOR, "#audit-table tbody tr")
            assert len(rows) == 1 and "browser test" in rows[0].text and target in rows[0].text
            driver.save_screenshot(str(tmp_path / "2_after_forget.png"))
            # a wrong token is refused and said so on the page
            driver.find_elements(By.CSS_SELECTOR, "#neighbours .neighbour input.select")[0].click()
            driver.find_element(By.ID, "token").clear()
            driver.find_element(By.ID, "token").send_keys("wrong-wrong-wrong-wrong")
            driver.find_element(By.ID, "forget-btn").click()
            wait.until(lambda d: "403" in d.find_element(By.ID, "status").text)
            assert "11 items" in driver.find_element(By.ID, "memory-info").text
        finally:
            driver.quit()
    assert (tmp_path / "1_neighbours.png").stat().st_size > 1000
