"""The voices page in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium)
against the real server as a subprocess on the tiny checkpoints with --http and a token: the page asks
for the token, lists the voices, designs a voice, plays a take, keeps it (then found in a Wyoming
describe), speaks any voice, clones from an upload, deletes with a confirmation, shows the server's
error messages, and shows names and descriptions as text, never as HTML."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .server_harness import FIXTURES, TINY_MODELS, ServerProcess, describe, free_port

TOKEN = "page-test-token"
XSS = '<img src=x onerror="window.__xss = true">'
VOICES_YAML = f"""\
default: alice
voices:
  alice:
    description: Alice (cloned)
    reference: ref.wav
    transcript: The quick brown fox.
    language: en
  narrator:
    description: '{XSS}'
    design: A deep male voice with a calm, authoritative presence.
    language: de
"""
# Design takes and voice renders on a shared 2-core machine: generous, as these are upper bounds only.
WORK_TIMEOUT = 300
PAGE_TIMEOUT = 30
TOKEN_KEY = "wyoming-qwen-tts.token"

# The state of an <audio> element, as the test judges that it loaded and played.
AUDIO_STATE = """
const audio = arguments[0];
return {readyState: audio.readyState, duration: audio.duration, currentTime: audio.currentTime,
        error: audio.error && audio.error.code, played: audio.played.length, src: audio.currentSrc};
"""


# One look at a status line and its buttons, so that "working" and "disabled" are seen at the same time.
WORK_STATE = """
const status = document.getElementById(arguments[0]);
const working = status.classList.contains("working") && !status.hidden;
return {working, over: !working && (status.hidden || status.classList.length > 1),
        text: status.textContent, disabled: arguments[1].map((id) => document.getElementById(id).disabled)};
"""


def chromium_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    missing = "chromium" if not chromium else "chromedriver"
    reason = f"{missing} is not installed (apt-get install -y chromium chromium-driver)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the browser test: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web-page-server")
    (tmp / "ref.wav").write_bytes((FIXTURES / "ref_16k_stereo.wav").read_bytes())
    (tmp / "voices.yaml").write_text(VOICES_YAML)
    http_port = free_port()
    process = ServerProcess([*TINY_MODELS, "--voices", str(tmp / "voices.yaml"), "--data-dir", str(tmp / "data"),
                             "--http", f"127.0.0.1:{http_port}", "--http-token", TOKEN], tmp / "server.log")
    process.url = f"http://127.0.0.1:{http_port}/"
    try:
        process.wait_ready()
        wait_for_http(process)
        yield process
    finally:
        process.stop()


def wait_for_http(process: ServerProcess) -> None:
    from selenium.webdriver.support.wait import WebDriverWait

    def page_served(_) -> bool:
        try:
            with urllib.request.urlopen(process.url, timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    WebDriverWait(None, 60, poll_frequency=0.2).until(page_served, f"no page at {process.url}:\n{process.log}")


def api(server, path: str, payload: dict | None = None, method: str | None = None) -> dict | None:
    request = urllib.request.Request(server.url + path, method=method, headers={"Authorization": f"Bearer {TOKEN}"})
    if payload is not None:
        request.data = json.dumps(payload).encode()
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=WORK_TIMEOUT) as response:
        body = response.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="module")
def chromium():
    from selenium import webdriver

    binary, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--autoplay-policy=no-user-gesture-required", "--mute-audio", "--window-size=1000,1400"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    driver.set_script_timeout(PAGE_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(chromium, server):
    """The page with the token already given, its voices listed."""
    open_page(chromium, server.url, token=TOKEN)
    wait_for_voice(chromium, "alice")
    yield chromium
    assert_no_script_errors(chromium)


# --- what a user does on the page ----------------------------------------------------------------

def wait(driver, condition, message: str, timeout: float = PAGE_TIMEOUT):
    """condition's first truthy answer; on a timeout, the message with what the page shows then."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.wait import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        raise AssertionError(f"{message} within {timeout} s; {page_state(driver)}") from None


def open_page(driver, url: str, token: str | None = None) -> None:
    driver.get(url)
    if token is None:
        driver.execute_script("localStorage.clear()")
    else:
        driver.execute_script("localStorage.setItem(arguments[0], arguments[1])", TOKEN_KEY, token)
    driver.get(url)
    driver.get_log("browser")  # only what happens from here on counts


def by_id(driver, element_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def voice_item(driver, name: str):
    """The list item of a voice, or None; in one script, as the list may be redrawn meanwhile."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#voice-list li.voice')]"
        ".find((item) => item.dataset.voice === arguments[0]) || null", name)


def wait_for_voice(driver, name: str, timeout: float = PAGE_TIMEOUT):
    return wait(driver, lambda d: voice_item(d, name), f"voice {name!r} not listed", timeout)


def wait_until_gone(driver, name: str) -> None:
    wait(driver, lambda d: voice_item(d, name) is None, f"voice {name!r} still listed")


def page_state(driver) -> str:
    """What the page shows the user (status lines, messages) and its console, for failure messages."""
    from selenium.webdriver.common.by import By

    shown = [f"{element.get_attribute('id')}: {element.text!r}"
             for element in driver.find_elements(By.CSS_SELECTOR, ".status, .message") if element.is_displayed()]
    return f"shown {shown}; console {driver.get_log('browser')}"


def wait_for_outcome(driver, status_id: str, timeout: float = WORK_TIMEOUT) -> tuple[str, str]:
    """(class, text) of a status line once its work is over: 'done', 'error', or hidden ''."""
    status = by_id(driver, status_id)

    def settled(_):
        classes = status.get_attribute("class").split()
        if "working" in classes:
            return None
        return ("done" if "done" in classes else "error" if "error" in classes else ""), status.text

    return wait(driver, settled, f"{status_id} still working", timeout)


def wait_for_work_to_start(driver, status_id: str, buttons: list[str]) -> None:
    """The user is told in words that something is happening and cannot click again meanwhile (or the
    work is already over: a fast machine)."""
    def seen(_):
        state = driver.execute_script(WORK_STATE, status_id, buttons)
        return state if state["working"] or state["over"] else None

    state = wait(driver, seen, f"{status_id} never showed work")
    if state["working"]:
        assert state["text"].strip(), "a spinner without words"
        assert all(state["disabled"]), f"buttons {buttons} enabled during work: {state}"


def select(driver, element_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(by_id(driver, element_id)).select_by_value(value)


def type_into(driver, element_id: str, text: str) -> None:
    element = by_id(driver, element_id)
    element.clear()
    element.send_keys(text)


def audio_state(driver, audio) -> dict:
    return driver.execute_script(AUDIO_STATE, audio)


def wait_until_played(driver, audio) -> dict:
    """The element decoded real audio and its playback advanced, without a media error."""
    def playing(_):
        state = audio_state(driver, audio)
        assert state["error"] is None, f"media error {state}"
        return state if state["readyState"] >= 2 and state["duration"] > 0 and state["currentTime"] > 0 else None

    return wait(driver, playing, f"audio never played: {audio_state(driver, audio)}")


def assert_no_script_errors(driver) -> None:
    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
              and "Failed to load resource" not in entry["message"]]  # a 4xx answer the test asked for
    assert not severe, severe


def design_takes(driver, design: str, language: str, count: int) -> list:
    from selenium.webdriver.common.by import By

    type_into(driver, "design-text", design)
    select(driver, "design-language", language)
    select(driver, "design-count", str(count))
    by_id(driver, "design-button").click()
    wait_for_work_to_start(driver, "design-status", ["design-button"])
    outcome = wait_for_outcome(driver, "design-status")
    assert outcome[0] == "", f"takes failed: {outcome}"
    takes = driver.find_elements(By.CSS_SELECTOR, "#take-list li.take")
    assert len(takes) == count and by_id(driver, "takes-panel").is_displayed()
    return takes


def play_take(driver, take) -> dict:
    from selenium.webdriver.common.by import By

    audio = take.find_element(By.TAG_NAME, "audio")
    driver.execute_script("arguments[0].play()", audio)
    return wait_until_played(driver, audio)


def keep_take(driver, name: str, description: str) -> tuple[str, str]:
    type_into(driver, "keep-name", name)
    type_into(driver, "keep-description", description)
    by_id(driver, "keep-button").click()
    wait_for_work_to_start(driver, "keep-status", ["keep-button", "design-button"])
    return wait_for_outcome(driver, "keep-status")


# --- the tests -----------------------------------------------------------------------------------

def test_page_asks_for_the_token_then_lists_the_voices(chromium, server):
    open_page(chromium, server.url, token=None)
    wait(chromium, lambda d: by_id(d, "token-panel").is_displayed(), f"no token field")
    assert "token" in by_id(chromium, "voices-status").text

    type_into(chromium, "token-input", "wrong")
    by_id(chromium, "token-input").submit()
    wait(chromium, lambda d: by_id(d, "message").is_displayed(), "a refused token is not reported")
    assert chromium.execute_script(f"return localStorage.getItem('{TOKEN_KEY}')") == "wrong"

    type_into(chromium, "token-input", TOKEN)
    by_id(chromium, "token-input").submit()
    alice = wait_for_voice(chromium, "alice")
    narrator = voice_item(chromium, "narrator")
    assert not by_id(chromium, "token-panel").is_displayed()
    assert "cloned" in alice.text and "English" in alice.text and "default" in alice.text
    assert "designed" in narrator.text and "German" in narrator.text
    # Voices from the user's voices file are not the page's to delete.
    assert not [button for button in chromium.find_elements("css selector", "#voice-list .delete")
                if button.is_displayed()]


def test_names_and_descriptions_are_shown_as_text_never_as_html(page, server):
    narrator = wait_for_voice(page, "narrator")
    description = narrator.find_element("css selector", ".voice-description")
    assert description.text == XSS
    assert not page.find_elements("css selector", "#voice-list img")
    assert page.execute_script("return window.__xss") is None


def test_design_a_voice_play_a_take_keep_it_and_find_it_in_wyoming_describe(page, server):
    takes = design_takes(page, "A bright, cheerful young female voice.", "en", 2)
    seeds = [int(take.get_attribute("data-seed")) for take in takes]
    assert len(set(seeds)) == 2, f"each take has its own seed: {seeds}"

    played = play_take(page, takes[1])
    assert played["duration"] > 0.1, played
    assert takes[1].find_element("css selector", "input").is_selected(), "the take played is the one kept"

    description = f"Bright {XSS}"
    outcome = keep_take(page, "brightvoice", description)
    assert outcome[0] == "done", outcome
    kept = wait_for_voice(page, "brightvoice")
    assert kept.find_element("css selector", ".voice-description").text == description
    assert kept.find_element("css selector", ".delete").is_displayed()
    assert page.execute_script("return window.__xss") is None

    listed = {voice["name"]: voice for voice in api(server, "v1/audio/voices")["voices"]}
    assert listed["brightvoice"]["seed"] == seeds[1] and listed["brightvoice"]["kind"] == "frozen"
    (program,) = asyncio.run(describe(server.port)).tts
    described = {voice.name: voice for voice in program.voices}
    assert "brightvoice" in described and described["brightvoice"].description == description


def test_keeping_under_a_taken_name_shows_the_servers_message(page, server):
    takes = design_takes(page, "A calm voice.", "auto", 1)
    assert takes
    state, text = keep_take(page, "alice", "")
    assert state == "error" and "alice" in text and "answered" not in text, (state, text)


def test_try_any_voice_with_any_text(page, server):
    select(page, "try-voice", "narrator")
    type_into(page, "try-text", "Guten Tag, wie geht es?")
    by_id(page, "try-button").click()
    wait_for_work_to_start(page, "try-status", ["try-button"])
    assert wait_for_outcome(page, "try-status")[0] == ""
    wait_until_played(page, by_id(page, "try-player"))


def test_play_button_speaks_a_sample_of_the_voice(page, server):
    voice_item(page, "alice").find_element("css selector", ".play").click()
    assert wait_for_outcome(page, "voices-status")[0] == ""
    wait_until_played(page, by_id(page, "voice-player"))


def test_clone_from_an_upload_then_delete_it_after_confirming(page, server, tmp_path):
    not_audio = tmp_path / "recording.wav"
    not_audio.write_text("this is not a recording")
    type_into(page, "clone-name", "grandpa")
    by_id(page, "clone-file").send_keys(str(not_audio))
    by_id(page, "clone-button").click()
    state, text = wait_for_outcome(page, "clone-status")
    assert state == "error" and text and "answered" not in text, (state, text)

    by_id(page, "clone-file").send_keys(str(FIXTURES / "ref_16k_stereo.wav"))
    type_into(page, "clone-transcript", "The quick brown fox.")
    by_id(page, "clone-button").click()
    wait_for_work_to_start(page, "clone-status", ["clone-button"])
    assert wait_for_outcome(page, "clone-status")[0] == "done"
    grandpa = wait_for_voice(page, "grandpa")
    assert "cloned" in grandpa.text

    grandpa.find_element("css selector", ".delete").click()
    page.switch_to.alert.dismiss()
    assert voice_item(page, "grandpa") is not None
    grandpa.find_element("css selector", ".delete").click()
    confirm = page.switch_to.alert
    assert "grandpa" in confirm.text
    confirm.accept()
    wait_until_gone(page, "grandpa")
    (program,) = asyncio.run(describe(server.port)).tts
    assert "grandpa" not in {voice.name for voice in program.voices}
    with pytest.raises(urllib.error.HTTPError) as missing:
        api(server, "v1/audio/voices/grandpa", method="DELETE")
    assert missing.value.code == 404


def test_page_works_behind_a_proxy_under_a_path_prefix(chromium, server):
    """As behind Home Assistant's ingress: the page, its files and its API calls all go through a
    prefix that the proxy strips, which only relative URLs survive."""
    with PrefixProxy(server.url, "/api/hassio_ingress/t0ken/") as proxy:
        open_page(chromium, proxy.url, token=TOKEN)
        wait_for_voice(chromium, "alice").find_element("css selector", ".play").click()
        assert wait_for_outcome(chromium, "voices-status")[0] == ""
        wait_until_played(chromium, by_id(chromium, "voice-player"))
        assert proxy.paths and all(path.startswith(proxy.prefix) for path in proxy.paths), proxy.paths
        assert {proxy.prefix, proxy.prefix + "static/app.js", proxy.prefix + "v1/audio/speech"} <= set(proxy.paths)
    assert_no_script_errors(chromium)


class PrefixProxy:
    """A reverse proxy that serves upstream under a path prefix and answers 404 to anything else."""

    def __init__(self, upstream: str, prefix: str) -> None:
        self.upstream, self.prefix, self.paths = upstream.rstrip("/"), prefix, []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_port}{prefix}"

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def forward(self) -> None:
                proxy.paths.append(self.path)
                if not self.path.startswith(proxy.prefix):
                    self.send_error(404)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = urllib.request.Request(proxy.upstream + "/" + self.path[len(proxy.prefix):],
                                                 data=body or None, method=self.command)
                for name in ("Authorization", "Content-Type"):
                    if self.headers.get(name):
                        request.add_header(name, self.headers[name])
                try:
                    response = urllib.request.urlopen(request, timeout=WORK_TIMEOUT)
                except urllib.error.HTTPError as err:
                    response = err
                with response:
                    answer = response.read()
                    self.send_response(response.status)
                    self.send_header("Content-Type", response.headers.get("Content-Type", "application/octet-stream"))
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)

            do_GET = do_POST = do_DELETE = forward

            def log_message(self, *args) -> None:
                pass

        return Handler

    def __enter__(self) -> PrefixProxy:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
