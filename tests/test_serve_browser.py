"""End to end in a real browser: headless Chromium loads the page served by uvicorn, runs a query
by keyboard, sees the result thumbnails load, opens a result, plays a video result from the
time that matched, goes Back to an earlier search and opens a shared search link; sets filters by
keyboard, sees them in the URL, in the request the service gets and restored by a reload."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from helpers import add_video, exif_photo, make_image, write_video

from jrsearch.indexer.pipeline import run_index
from jrsearch.retrieval.engine import SearchEngine
from jrsearch.retrieval.library import Library

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1200,900", "--autoplay-policy=no-user-gesture-required")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason=f"headless browser test needs {CHROMIUM} and {CHROMEDRIVER} "
           f"(Debian: apt-get install chromium chromium-driver; .ci/run installs them)")


@contextmanager
def running_server(app) -> Iterator[str]:
    """uvicorn on a free loopback port in a thread; yields the base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def chromium(profile: Path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.slow
def test_page_searches_by_keyboard_and_shows_thumbnails(tmp_path, tiny_encoder):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from jrsearch.cli.web.app import create_app
    from jrsearch.cli.web.security import LOOPBACK_NAMES
    from jrsearch.retrieval.service import LibraryService

    media = tmp_path / "media"
    for i in range(6):
        make_image(media / f"photo{i}.jpg", seed=i, size=(120, 80))
    library = Library.open(tmp_path / "lib", create=True)
    run_index(library, tiny_encoder, [media])
    query = "a photo of a cat"
    match = tiny_encoder.encode_texts([query])  # the clip's 2-4 s segment is the query itself
    add_video(library, write_video(media / "clip.webm", codec="libvpx"), tiny_encoder.dim,
              np.concatenate([-match, match]))
    service = LibraryService(library, SearchEngine(library, encoder=tiny_encoder))
    app = create_app(service, allowed_hosts=LOOPBACK_NAMES)

    with running_server(app) as url, chromium(tmp_path / "profile") as driver:
        wait = WebDriverWait(driver, 20)
        driver.get(url + "/")
        wait.until(lambda d: "6 image" in d.find_element(By.ID, "message").text)  # /api/status answered
        box = driver.find_element(By.ID, "q")
        box.send_keys(query, Keys.ENTER)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result img")) == 6)
        loaded = """return [...document.querySelectorAll('#results .result img')]
                    .map(img => img.complete && img.naturalWidth > 0 && img.src.includes('/thumbnail'))"""
        wait.until(lambda d: all(d.execute_script(loaded)))  # every thumbnail fetched and decoded
        assert "6 results" in driver.find_element(By.ID, "message").text
        names = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#results .result .name")]
        assert sorted(names) == [f"photo{i}.jpg" for i in range(6)]

        box.send_keys(Keys.ARROW_DOWN)  # into the grid, then one to the right, then open it
        driver.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
        focused = driver.switch_to.active_element
        assert focused.get_attribute("data-index") == "1"
        focused.send_keys(Keys.ENTER)
        viewer = driver.find_element(By.ID, "viewer")
        wait.until(lambda d: viewer.is_displayed())
        image = viewer.find_element(By.CSS_SELECTOR, "#viewer-body img")
        wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", image) == 120)
        assert names[1] in driver.find_element(By.ID, "viewer-caption").text
        driver.switch_to.active_element.send_keys(Keys.ESCAPE)
        wait.until(lambda d: not viewer.is_displayed())

        Select(driver.find_element(By.ID, "kind")).select_by_value("video")  # searches again, for videos
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .result[data-kind=video] .time"))
        card = driver.find_element(By.CSS_SELECTOR, "#results .result[data-kind=video]")
        assert card.find_element(By.CLASS_NAME, "time").text == "0:02.0–0:04.0"
        assert "t=2.0" in card.find_element(By.TAG_NAME, "img").get_attribute("src")  # the matching frame
        card.click()
        video = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#viewer-body video"))
        wait.until(lambda d: d.execute_script("return arguments[0].currentTime", video) >= 2.0)  # plays from 2 s
        driver.find_element(By.ID, "close").click()

        # the search lives in the URL: each search is a history entry, Back restores the last one
        assert "kind=video" in driver.current_url and "q=a+photo+of+a+cat" in driver.current_url
        driver.back()
        wait.until(lambda d: "kind=image" in d.current_url)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result[data-kind=image]")) == 6)
        assert Select(driver.find_element(By.ID, "kind")).first_selected_option.get_attribute("value") == "image"
        assert driver.find_element(By.ID, "q").get_attribute("value") == query
        # a shared link runs its search on load, filters included
        driver.get(url + "/?q=cat&kind=image&top_k=2&glob=photo1*")
        wait.until(lambda d: "results for “cat”" in d.find_element(By.ID, "message").text)
        assert [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#results .result .name")] == ["photo1.jpg"]
        assert driver.find_element(By.ID, "top_k").get_attribute("value") == "2"
        assert driver.find_element(By.ID, "glob").get_attribute("value") == "photo1*"
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]  # no JS errors, no 4xx/5xx
    assert os.listdir(library.root / "thumbnails")  # the server cached what the page showed


class RecordingService:
    """A library's service that keeps each `SearchRequest` it is asked."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.requests: list = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def search(self, vector, request):
        self.requests.append(request)
        return self.inner.search(vector, request)


@pytest.mark.slow
def test_page_filters_are_reachable_by_keyboard_kept_in_the_url_and_sent(tmp_path, tiny_encoder):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from jrsearch.cli.web.app import create_app
    from jrsearch.cli.web.security import LOOPBACK_NAMES
    from jrsearch.retrieval.request import Filters
    from jrsearch.retrieval.service import LibraryService

    media = tmp_path / "media"
    for i in range(3):
        make_image(media / f"photo{i}.jpg", seed=i, size=(120, 80))
    exif_photo(media / "photo0.jpg", seed=0, taken="2024:06:01 12:30:00", offset="+02:00", place=(43.46, 11.88),
               camera=("Canon", "EOS R5"), size=(120, 80))  # the one photo every filter below keeps
    library = Library.open(tmp_path / "lib", create=True)
    run_index(library, tiny_encoder, [media])
    service = RecordingService(LibraryService(library, SearchEngine(library, encoder=tiny_encoder)))
    app = create_app(service, allowed_hosts=LOOPBACK_NAMES)
    wanted = Filters.make(None, None, after="2024-06", near="43.46,11.88,5", camera="Canon")

    with running_server(app) as url, chromium(tmp_path / "profile") as driver:
        wait = WebDriverWait(driver, 20)
        driver.get(url + "/")
        wait.until(lambda d: "3 image" in d.find_element(By.ID, "message").text)
        assert "with a date taken" in driver.find_element(By.ID, "message").text  # the status's counts
        box = driver.find_element(By.ID, "q")
        box.send_keys("a photo")
        for _ in range(6):  # Tab from the query box reaches the filter panel's summary
            ActionChains(driver).send_keys(Keys.TAB).perform()  # (by example's file input takes keys as a path)
            if driver.switch_to.active_element.tag_name == "summary":
                break
        assert driver.switch_to.active_element.tag_name == "summary"
        driver.switch_to.active_element.send_keys(Keys.ENTER)  # opens the panel
        wait.until(lambda d: d.find_element(By.ID, "after").is_displayed())
        typed = {"after": "2024-06", "near": "43.46,11.88,5", "camera": "Canon"}
        visited = []
        while "camera" not in visited and len(visited) < 8:  # Tab on through the fields, typing into three
            driver.switch_to.active_element.send_keys(Keys.TAB)
            visited.append(field := driver.switch_to.active_element.get_attribute("id"))
            if field in typed:
                driver.switch_to.active_element.send_keys(typed[field])
        assert visited == ["top_k", "under", "glob", "after", "before", "near", "camera"]
        for name, value in typed.items():
            assert driver.find_element(By.ID, name).get_attribute("value") == value
            label = driver.find_element(By.XPATH, f"//label[.//input[@id='{name}']]")
            assert label.text.strip(), f"{name} has no label"
        driver.switch_to.active_element.send_keys(Keys.ENTER)  # Enter in a field searches
        wait.until(lambda d: "results for “a photo”" in d.find_element(By.ID, "message").text)
        assert service.requests[-1].filters == wanted  # the request the service received carries them
        for part in ("after=2024-06", "near=43.46%2C11.88%2C5", "camera=Canon", "q=a+photo"):
            assert part in driver.current_url
        assert driver.find_element(By.ID, "filter-count").text == "(3)"
        taken = driver.find_element(By.CSS_SELECTOR, "#results .result[data-index='0'] .taken")
        assert taken.text == "2024-06-01 12:30 · Canon EOS R5 · 43.4600, 11.8800"
        assert len(driver.find_elements(By.CSS_SELECTOR, "#results .result")) == 1  # the filters narrowed it

        asked = len(service.requests)
        driver.refresh()  # a reload (or a shared link) restores the filters and searches with them
        wait.until(lambda d: len(service.requests) > asked)
        wait.until(lambda d: "results for “a photo”" in d.find_element(By.ID, "message").text)
        assert service.requests[-1].filters == wanted
        for name, value in typed.items():
            assert driver.find_element(By.ID, name).get_attribute("value") == value
        assert driver.find_element(By.ID, "filters").get_attribute("open") is not None
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]

        after = driver.find_element(By.ID, "after")  # a date that is none: the server's line, as an error
        after.clear()
        after.send_keys("2024-13", Keys.ENTER)
        message = driver.find_element(By.ID, "message")
        wait.until(lambda d: "is not a date" in message.text)
        assert message.text.startswith("after '2024-13' is not a date: use YYYY")
        assert "error" in message.get_attribute("class")


AXE = Path(__file__).parent / ".axe" / "node_modules" / "axe-core" / "axe.min.js"
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 3, "mobile": True}


def axe_violations(driver) -> list[str]:
    """axe-core's violations on the page as it is now (rule id and the first offending element)."""
    if not AXE.is_file():
        pytest.skip(f"axe-core not found at {AXE} (npm install --prefix tests/.axe axe-core; .ci/run does)")
    driver.execute_script(AXE.read_text())
    found = driver.execute_async_script("const done = arguments[arguments.length - 1];"
                                        "axe.run(document).then((r) => done(r.violations), (e) => done(String(e)));")
    assert isinstance(found, list), found
    return [f"{v['id']}: {v['nodes'][0]['html'][:120]}" for v in found]


@pytest.mark.slow
def test_page_works_by_keyboard_on_a_phone_and_passes_axe(tmp_path, tiny_encoder):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from jrsearch.cli.web.app import create_app
    from jrsearch.cli.web.security import LOOPBACK_NAMES
    from jrsearch.retrieval.service import LibraryService

    media = tmp_path / "media"
    for i in range(6):
        make_image(media / f"photo{i}.jpg", seed=i, size=(800, 600))  # more pixels than a phone's card shows
    (tmp_path / "caps.txt").write_text("a dog on a beach\na red car\nthree bikes\n")
    library = Library.open(tmp_path / "lib", create=True)
    run_index(library, tiny_encoder, [media, tmp_path / "caps.txt"])
    add_video(library, write_video(media / "clip.webm", codec="libvpx"), tiny_encoder.dim)  # 1 file, 2 vectors
    app = create_app(LibraryService(library, SearchEngine(library, encoder=tiny_encoder)), allowed_hosts=LOOPBACK_NAMES)
    active = "return [document.activeElement.id, document.activeElement.tagName, document.activeElement.className]"

    with running_server(app) as url, chromium(tmp_path / "profile") as driver:
        wait = WebDriverWait(driver, 20)

        def press(*keys: str) -> None:  # as a person does (an element's send_keys to a file input uploads)
            ActionChains(driver).send_keys(*keys).perform()

        driver.get(url + "/")
        message = driver.find_element(By.ID, "message")
        wait.until(lambda d: "6 images" in message.text)  # files by kind, captions as captions
        assert message.text.startswith("6 images, 3 captions, 1 video · ")  # (was "6 image, 2 video": vectors)
        headings = driver.find_elements(By.TAG_NAME, "h1")
        assert len(headings) == 1 and headings[0].get_attribute("textContent").startswith("jrsearch")
        driver.find_element(By.ID, "q").send_keys("a photo", Keys.ENTER)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) == 6)

        walk = []  # Tab from the query box through every control to the first result
        while len(walk) < 10 and "result" not in (walk[-1][2] if walk else ""):
            press(Keys.TAB)
            walk.append(driver.execute_script(active))
        assert [w[0] or w[1] for w in walk] == ["BUTTON", "kind", "file", "SUMMARY",
                                                "term", "term-add", "term-subtract", "LI"]
        example = driver.find_element(By.ID, "file")
        assert driver.find_element(By.XPATH, "//label[.//input[@id='file']]").text.strip() == "by example"
        example.send_keys(str(media / "photo3.jpg"))  # the focusable control searches by example
        wait.until(lambda d: "results for photo3.jpg" in message.text)
        assert driver.find_element(By.CSS_SELECTOR, "#results .result .name").text == "photo3.jpg"

        driver.execute_script("document.querySelector(\"#results .result[data-index='2']\").focus()")
        press(Keys.ENTER)
        viewer = driver.find_element(By.ID, "viewer")
        wait.until(lambda d: viewer.is_displayed())
        assert driver.execute_script(active)[0] == "close"
        assert axe_violations(driver) == []  # the open viewer
        for back in (False, False, True, False):
            if back:
                ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
            else:
                press(Keys.TAB)
            assert driver.execute_script("return document.getElementById('viewer').contains(document.activeElement)")
        press(Keys.ESCAPE)
        wait.until(lambda d: not viewer.is_displayed())
        assert driver.execute_script("return document.activeElement.dataset.index") == "2"  # back where it opened
        assert axe_violations(driver) == []  # the page with results
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]

        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
        driver.get(url + "/?q=a+photo")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result img")) == 6)
        sharp = """const done = arguments[arguments.length - 1];
            Promise.all([...document.querySelectorAll('#results .result img')].map((img) => new Promise((ok) => {
              const check = () => { const real = new Image(); real.onload = () => ok([real.naturalWidth,
                img.getBoundingClientRect().width * devicePixelRatio, img.getBoundingClientRect().left]);
                real.src = img.currentSrc; };
              img.complete && img.currentSrc ? check() : img.addEventListener('load', check, {once: true});
            }))).then(done);"""
        thumbs = driver.execute_async_script(sharp)  # [pixels in the thumbnail, device pixels shown, left]
        assert len({round(left) for _, _, left in thumbs}) >= 2  # two columns or more at 390 px
        assert all(pixels >= shown for pixels, shown, _ in thumbs), thumbs
        assert axe_violations(driver) == []



@pytest.mark.slow
def test_page_more_like_this_and_term_chips_are_in_the_url(tmp_path, tiny_encoder):
    """Issue 24: a result's "more like this" button (by keyboard) searches by its stored vector and the
    URL keeps it (a reload searches the same); a term typed is a chip, in the URL, removable."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from jrsearch.cli.web.app import create_app
    from jrsearch.cli.web.security import LOOPBACK_NAMES
    from jrsearch.retrieval.request import Like, QueryTerm
    from jrsearch.retrieval.service import LibraryService

    media = tmp_path / "media"
    for i in range(4):
        make_image(media / f"photo{i}.jpg", seed=i, size=(120, 80))
    library = Library.open(tmp_path / "lib", create=True)
    run_index(library, tiny_encoder, [media])
    service = RecordingService(LibraryService(library, SearchEngine(library, encoder=tiny_encoder)))
    app = create_app(service, allowed_hosts=LOOPBACK_NAMES)

    def names(driver) -> list[str]:
        return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#results .result .name")]

    with running_server(app) as url, chromium(tmp_path / "profile") as driver:
        wait = WebDriverWait(driver, 20)
        driver.get(url + "/")
        wait.until(lambda d: "4 image" in d.find_element(By.ID, "message").text)
        driver.find_element(By.ID, "q").send_keys("a photo", Keys.ENTER)
        wait.until(lambda d: "results for “a photo”" in d.find_element(By.ID, "message").text)
        second = driver.find_element(By.CSS_SELECTOR, "#results .result[data-index='1']")
        liked_name = second.find_element(By.CSS_SELECTOR, ".name").text
        button = second.find_element(By.CSS_SELECTOR, "button.like")
        assert button.get_attribute("aria-label") == f"More like this: {liked_name}"
        second.send_keys(Keys.TAB)  # from the card, Tab reaches its button; Enter presses it
        assert driver.switch_to.active_element == button
        button.send_keys(Keys.ENTER)
        wait.until(lambda d: f"results for more like {liked_name}" in d.find_element(By.ID, "message").text)
        liked = library.item_at(str(media / liked_name))
        assert liked is not None and f"like={liked.id}" in driver.current_url and "q=" not in driver.current_url
        assert service.requests[-1].terms == (QueryTerm(Like(liked.id)),)
        assert names(driver)[0] == liked_name
        assert driver.find_element(By.ID, "viewer").get_attribute("hidden") is not None  # the card did not open
        first = names(driver)

        asked = len(service.requests)
        driver.refresh()  # a reload (or a shared link) searches the same
        wait.until(lambda d: len(service.requests) > asked and names(d) == first)
        assert service.requests[-1].terms == (QueryTerm(Like(liked.id)),)
        assert f"like item {liked.id}" in driver.find_element(By.ID, "terms").text

        term = driver.find_element(By.ID, "term")
        term.send_keys("2:a red car", Keys.ENTER)  # Enter adds the term and searches
        wait.until(lambda d: "add=2%3Aa+red+car" in d.current_url)
        wait.until(lambda d: len(service.requests[-1].terms) == 2)
        assert service.requests[-1].terms[1] == QueryTerm("a red car", 2.0)
        remove = driver.find_element(By.CSS_SELECTOR, "#terms button[aria-label='Remove + 2:a red car']")
        remove.send_keys(Keys.ENTER)
        wait.until(lambda d: "add=" not in d.current_url)
        assert service.requests[-1].terms == (QueryTerm(Like(liked.id)),)
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
