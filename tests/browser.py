"""Opens a local HTML page in headless Chromium with the network off, for the report tests.

Needs selenium (the `test` extra) and Debian's chromium + chromium-driver; `skip_reason()` says
which is missing so a test can skip with it instead of failing on a machine without a browser.
"""

from __future__ import annotations

import importlib.util
import pathlib
import shutil

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def skip_reason() -> str | None:
  """Why the browser check cannot run here (None when it can)."""
  if importlib.util.find_spec("selenium") is None:
    return "selenium is not installed: pip install -e '.[test]'"
  for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
    if not pathlib.Path(path).exists():
      return f"{path} is missing: apt-get install {package}"
  return None


def check_page(path, screenshot: pathlib.Path) -> dict:
  """Loads `path` offline, saves a full-page screenshot and reports what the browser saw."""
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1400,1000", "--proxy-server=127.0.0.1:9",  # nothing reachable
              "--proxy-bypass-list=<-loopback>"):
    options.add_argument(arg)
  options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
  driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or CHROMEDRIVER),
                            options=options)
  try:
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    driver.get(pathlib.Path(path).resolve().as_uri())
    images = driver.execute_script(
        "const im = Array.from(document.images);"
        "return [im.length, im.filter(i => i.complete && i.naturalWidth > 0).length];")
    width, height = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight];")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": max(width, 800), "height": min(max(height, 600), 16000),
        "deviceScaleFactor": 1, "mobile": False})
    screenshot = pathlib.Path(screenshot)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(screenshot))
    errors = [entry["message"] for entry in driver.get_log("browser")
              if entry["level"] == "SEVERE"]
    return {"console_errors": errors, "images": images[0], "images_loaded": images[1],
            "title": driver.title}
  finally:
    driver.quit()
