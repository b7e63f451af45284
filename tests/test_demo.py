"""`svp demo` on the tiny generator: the page in a real headless Chromium (Debian's `chromium` and
`chromium-driver` through Selenium), the same endpoint through `gradio_client`, one-line errors
in the page, the queue, the upload limit, and nothing fetched from outside or kept from uploads.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from components.media import decode_audio, probe_video
from tests.conftest import SVP
from tests.test_fault_drill import closed_port
from tests.test_generation import media, tiny_generator  # noqa: F401 (fixtures)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_url(tiny_generator, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("demo")
    params = yaml.safe_load(tiny_generator.params.read_text())
    params["demo"].update(max_upload_mb=1, report=str(root / "no_report.html"))
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    port = closed_port()
    env = os.environ | {"GRADIO_TEMP_DIR": str(root / "gradio")}
    server = subprocess.Popen([SVP, "demo", "--port", str(port), "--model",
                               str(tiny_generator.folder), "--params", str(root / "params.yaml")],
                              cwd=root, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"svp demo did not start: {server.stdout.read()[-3000:]}"
                                     ) from None
            time.sleep(0.5)
    yield url, root / "gradio"
    server.terminate()
    server.wait(timeout=60)


def chromium(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def requested_urls(driver) -> set[str]:
    urls = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.add(message["params"]["request"]["url"])
    return urls


def both_uploads_shown(driver) -> bool:
    from selenium.webdriver.common.by import By

    return all(driver.find_elements(By.CSS_SELECTOR, f"#{name} input[type=file]")
               for name in ("portrait", "speech"))


def page_text(driver) -> str:
    return driver.execute_script("return document.body.innerText")


def test_the_page_makes_a_video_in_chromium_and_shows_bad_input(demo_url, media, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, uploads_dir = demo_url
    driver = chromium(1280, 1600)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 120)
        wait.until(both_uploads_shown)  # Gradio renders its components one after another
        driver.find_element(By.CSS_SELECTOR, "#portrait input[type=file]").send_keys(
            str(media["portrait"]))
        driver.find_element(By.CSS_SELECTOR, "#speech input[type=file]").send_keys(
            str(media["speech"]))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#speech audio, #speech canvas, "
                                                              "#speech .waveform-container"))
        driver.find_element(By.XPATH, "//*[@id='style']//label[.//span[text()='happy']]").click()
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: d.execute_script(
            "const v = document.querySelector('#result video'); return v && v.duration > 0"))
        duration = driver.execute_script("return document.querySelector('#result video')"
                                         ".duration")
        speech, rate = decode_audio(media["speech"])
        assert abs(duration - len(speech) / rate) < 0.1
        assert "style: happy" in page_text(driver)
        assert driver.find_elements(By.CSS_SELECTOR, "#crop img")  # the crop the model saw
        assert "Trained on tiny" in page_text(driver)  # the model panel
        driver.save_screenshot(str(tmp_path / "desktop.png"))
        assert (tmp_path / "desktop.png").stat().st_size > 10_000
        # nothing the visitor uploaded stays on the server after the answer
        assert not [p for p in uploads_dir.rglob("*") if p.name in ("portrait.png",
                                                                    media["speech"].name)]

        assert "Your uploads were deleted" in page_text(driver)

        # a face-less image: the CLI's one line in the page, and the page keeps serving
        wait.until(both_uploads_shown)
        driver.find_element(By.CSS_SELECTOR, "#speech input[type=file]").send_keys(
            str(media["speech"]))
        driver.find_element(By.CSS_SELECTOR, "#portrait input[type=file]").send_keys(
            str(media["blank"]))
        time.sleep(1)
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: "no face found in the image" in page_text(d))
        assert "blank.png: no face found in the image" in page_text(driver)
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert answer.status == 200

        # a phone's width: nothing wider than the screen
        driver.set_window_size(390, 844)
        driver.get(url)
        wait.until(lambda d: d.find_elements(By.ID, "generate"))
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 390
        driver.save_screenshot(str(tmp_path / "phone.png"))
        outside = {u for u in requested_urls(driver)
                   if not u.startswith((url.rstrip("/"), "data:", "blob:"))}
        assert not outside  # works offline: no fonts, scripts or analytics from elsewhere
    finally:
        driver.quit()


def test_the_same_endpoint_through_gradio_client(demo_url, media, tmp_path):  # noqa: F811
    from gradio_client import Client, handle_file
    from gradio_client.client import Status
    from gradio_client.exceptions import AppError

    url, _ = demo_url
    client = Client(url, verbose=False)

    def request(portrait: Path, speech: Path, style: str = "sad", mix_with: str = "nothing"):
        return (handle_file(str(portrait)), handle_file(str(speech)), style, None, mix_with,
                0.5, 3, None)

    video, download, _, note, *_ = client.predict(*request(media["portrait"], media["speech"]),
                                                 api_name="/generate")
    path = Path(video["video"] if isinstance(video, dict) else video)
    speech, rate = decode_audio(media["speech"])
    info = probe_video(path)
    assert info.problem is None and abs(info.n_frames / 25 - len(speech) / rate) < 0.1
    assert "style: sad; seed 3" in note and Path(download).is_file()

    with pytest.raises(AppError, match=r"silent\.wav: the audio is silent"):
        client.predict(*request(media["portrait"], media["silent"]), api_name="/generate")
    big = tmp_path / "big.wav"  # over demo.max_upload_mb (1 MB here)
    big.write_bytes(os.urandom(2 * 2**20))
    with pytest.raises(Exception, match=r"(?i)file size|too large|exceeds"):
        client.predict(*request(media["portrait"], big), api_name="/generate")

    # one generation at a time: whichever visitor the server takes second waits in the queue
    # and is told so (the two submissions race, so both are watched)
    slow = request(media["portrait"], media["speech"], "happy", "sad")
    jobs = [client.submit(*slow, api_name="/generate") for _ in range(2)]
    seen = set()
    while not all(job.done() for job in jobs):
        for job in jobs:
            status = job.status()
            seen.add((status.code, status.rank))
        time.sleep(0.05)
    assert all(job.result() for job in jobs)
    assert any(code == Status.IN_QUEUE for code, _ in seen), seen
