"""The page in a real browser: Debian's headless Chromium, a wav as its microphone, the real server.

OMNI_SERVE_SCREENSHOT=docs/serve_page.png keeps the screenshot of the answered page there.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from omni.serve.launch import Server, launched
from tests.serve.conftest import WAV

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make system-deps)")


def browser(microphone: str):
    """Headless Chromium whose microphone plays `microphone` (a wav path, `%noloop` to play it once)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--use-fake-ui-for-media-stream",  # grants the microphone without asking
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=900,720",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


def answered(driver, timeout: float = 90) -> dict:
    from selenium.webdriver.support.ui import WebDriverWait

    finished = "const a = window.omni.answers[0]; return !!a && (a.done || !!a.error)"
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(finished))
    return driver.execute_script("return window.omni.answers[0]")


def check_page(driver, answer: dict) -> None:
    """Text, audio and latency arrived and show; the question's waveform is drawn."""
    from selenium.webdriver.common.by import By

    assert answer["error"] is None and answer["done"]
    assert answer["text"].strip() and driver.find_element(By.ID, "answer").text.strip() == answer["text"].strip()
    assert answer["chunks"] >= 2 and answer["samples"] > 0
    assert driver.execute_script("return window.omni.scheduled") == answer["chunks"]  # each chunk was played
    latency = driver.find_element(By.ID, "latency").text
    assert re.fullmatch(r"first packet: \d+ ms \(server: \d+ ms\)", latency), latency
    assert 0 < answer["serverFirstPacketMs"] <= answer["firstPacketMs"] < 30_000
    assert re.fullmatch(rf"{answer['chunks']} audio chunks, \d+\.\d s", driver.find_element(By.ID, "audio-info").text)
    drawn = "const c = document.getElementById('wave'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n"  # noqa: E501
    assert driver.execute_script(drawn) > 1000


def test_hold_to_talk_with_the_fake_microphone(server, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver = browser(str(WAV))
    try:
        driver.get(server.url)
        ActionChains(driver).click_and_hold(driver.find_element(By.ID, "talk")).pause(3.5).release().perform()
        answer = answered(driver)
        check_page(driver, answer)
        assert 2.0 < answer["questionSeconds"] < 4.0  # what was held, give or take opening the microphone
        driver.save_screenshot(str(tmp_path / "page.png"))
    finally:
        driver.quit()
    if os.environ.get("OMNI_SERVE_SCREENSHOT"):
        keep = Path(os.environ["OMNI_SERVE_SCREENSHOT"])
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "page.png", keep)


def test_hands_free_ends_the_question_when_the_speech_stops(server):
    from selenium.webdriver.common.by import By

    driver = browser(f"{WAV}%noloop")  # the question once, then silence
    try:
        driver.get(server.url)
        driver.find_element(By.ID, "handsfree").click()
        driver.find_element(By.ID, "talk").click()
        answer = answered(driver)
        check_page(driver, answer)
        assert 3.0 < answer["questionSeconds"] < 6.0  # the 3 s wav and the detector's 0.8 s of quiet
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def talkative_server(tiny_models, tmp_path_factory) -> Iterator[Server]:
    """The tiny models with answers of about 4 s (256 tokens): long enough to be talked over."""
    args = [f"--{name}={path}" for name, path in tiny_models.items()] + ["--device=cpu", "--max-new-tokens=256"]
    with launched(args, log=tmp_path_factory.mktemp("serve_log") / "serve.log") as running:
        yield running


def test_speaking_over_the_answer_stops_it_and_the_next_question_is_answered(talkative_server, tmp_path):
    """Hands-free: a question, 1.2 s of quiet (the question ends after 0.8 s), then a second question spoken
    while the first answer plays."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    speech, rate = sf.read(WAV, dtype="float32")
    quiet = np.zeros(int(1.2 * rate), np.float32)
    microphone = tmp_path / "microphone.wav"
    sf.write(microphone, np.concatenate([speech, quiet, speech, np.zeros(4 * rate, np.float32)]), rate)
    driver = browser(f"{microphone}%noloop")
    try:
        driver.get(talkative_server.url)
        driver.find_element(By.ID, "handsfree").click()
        driver.find_element(By.ID, "talk").click()
        second = "const a = window.omni.answers[1]; return !!a && (a.done || !!a.error)"
        WebDriverWait(driver, 90).until(lambda d: d.execute_script(second))
        first, second = driver.execute_script("return window.omni.answers")
        interrupts = driver.execute_script("return window.omni.interrupts")
    finally:
        driver.quit()
    cut = first["interrupted"]
    assert interrupts == 1 and cut and cut["stopped"] >= 1  # audio still to play was stopped at once
    assert isinstance(cut["heard"], str) and first["text"].startswith(cut["heard"])  # the server said what was kept
    assert 0 < cut["played"] < first["samples"] or not first["done"]
    assert second["error"] is None and second["done"] and second["text"].strip()
    assert second["contextTurns"] == 2  # answered after the cut first exchange
    assert 3.0 < second["questionSeconds"] < 6.5  # the spoken second question, from its start (the pre-roll)
