"""The screenshot of `ulmfit serve`'s page in docs/serving.md: serve a model on a free loopback port, type a
question into the page in headless Chromium (Debian's chromium + chromium-driver), tick "show the words",
save the page.

  python scripts/serve_screenshot.py BUNDLE_OR_RUN docs/img/serve-page.png ["a question"]
"""
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

model, out = sys.argv[1], Path(sys.argv[2])
text = sys.argv[3] if len(sys.argv) > 3 else "How far is it from Denver to Aspen ?"
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
proc = subprocess.Popen([sys.executable, "-m", "ulmfit_cli", "serve", "--model", model, "--port", str(port)])
url = f"http://127.0.0.1:{port}"
try:
    for _ in range(300):
        try:
            if httpx.get(f"{url}/health/ready").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=820,800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url + "/")
        driver.find_element(By.ID, "text").send_keys(text)
        driver.find_element(By.ID, "explain").click()
        driver.find_element(By.ID, "go").click()
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#words span"))
        driver.save_screenshot(str(out))
        print(f"{out}: {driver.find_element(By.ID, 'label').text}")
    finally:
        driver.quit()
finally:
    proc.terminate()
    proc.wait(30)
