"""Screenshot of the voices page (README's docs/web-page.png) in headless Chromium.

    python tools/web_page_screenshot.py http://127.0.0.1:PORT/ docs/web-page.png [--token T] [--design TEXT]
        [--until design-form]

With --design, the page first makes takes of that description, so the picture shows them too.
"""

from __future__ import annotations

import argparse
import base64
import shutil
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

TOKEN_KEY = "wyoming-qwen-tts.token"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--token")
    parser.add_argument("--design", help="a voice description to make takes of before the screenshot")
    parser.add_argument("--width", type=int, default=820)
    parser.add_argument("--until", help="end the picture below the section holding this element id")
    args = parser.parse_args()

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--mute-audio", "--hide-scrollbars",
                     f"--window-size={args.width},1200", "--force-color-profile=srgb"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    try:
        driver.get(args.url)
        if args.token:
            driver.execute_script("localStorage.setItem(arguments[0], arguments[1])", TOKEN_KEY, args.token)
            driver.get(args.url)
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#voice-list li.voice"))
        if args.design:
            driver.find_element(By.ID, "design-text").send_keys(args.design)
            driver.find_element(By.ID, "design-button").click()
            WebDriverWait(driver, 600).until(lambda d: d.find_element(By.ID, "takes-panel").is_displayed())
            driver.find_element(By.ID, "keep-name").send_keys("storyteller")
        driver.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        if args.until:
            height = driver.execute_script(
                "return document.getElementById(arguments[0]).closest('section').getBoundingClientRect().bottom",
                args.until)
        clip = {"x": 0, "y": 0, "width": args.width, "height": int(height) + 16, "scale": 1}
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"clip": clip, "captureBeyondViewport": True})
        Path(args.out).write_bytes(base64.b64decode(shot["data"]))
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
