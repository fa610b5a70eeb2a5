"""aelab explore's page in a real headless browser (Debian's chromium and chromium-driver, installed by .ci/run):
it loads from aelab alone, the scatter has a point per test code, the pointer, a slider and two clicked examples
each change what is decoded. Skips where no Chromium is installed."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

import aelab
from aelab.commands.explore import started

CHROMEDRIVER = Path("/usr/bin/chromedriver")  # Debian's chromium-driver: selenium must never download one
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TEST_EXAMPLES = 32  # data=synthetic data.source.n=256: test_fraction 0.125

pytestmark = pytest.mark.skipif(CHROMIUM is None or not CHROMEDRIVER.is_file(),
                                reason="no Chromium: apt-get install chromium chromium-driver (as .ci/run does)")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory):
    """A trained 2-D VAE served on a free port, and a headless Chromium on its page."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    run = aelab.train(["data=synthetic", "data.source.n=256", "model=vae", "latent_dim=2", "epochs=1", "batch_size=64",
                       "device=cpu", "logger=none", "threads=1",
                       f"hydra.run.dir={tmp_path_factory.mktemp('explore') / 'vae'}"]).run_dir
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="aelab.conf", version_base="1.3"):
        cfg = compose(config_name="explore", overrides=[f"run={run}", "device=cpu", "threads=1", "prior_points=300"])
    GlobalHydra.instance().clear()
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,900",
                 "--force-device-scale-factor=1", "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    with started(cfg) as (server, _):
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
        try:
            driver.get(server.url)
            _until(driver, "return document.body.dataset.ready === '1' && !!window.aelabExplore.code")
            yield driver, server.url
        finally:
            driver.quit()
            server.shutdown()


def _until(driver, script: str, timeout: float = 10.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: d.execute_script(script))


COUNT_DECODES = """
window.aelabCount = {inflight: 0, most: 0, sent: 0};
const plain = window.fetch;
window.fetch = (url, init) => {
  if (!String(url).includes("api/decode")) return plain(url, init);
  const c = window.aelabCount;
  c.inflight += 1; c.sent += 1; c.most = Math.max(c.most, c.inflight);
  return plain(url, init).finally(() => { c.inflight -= 1; });
};
"""  # counts the page's decode requests, and the most ever in flight at once


LAST_POSITION_SHOWN = """
const s = window.aelabExplore, c = window.aelabCount;
if (c.inflight || s.decoder.next || !s.shown || !s.shown.plane) return false;
const [x, y] = document.getElementById('cursor').getAttribute('transform').slice(10, -1).split(' ').map(Number);
const [[x0, x1], [y0, y1]] = s.plane.bounds;
const [u, v] = [x0 + x / 560 * (x1 - x0), y0 + (560 - y) / 560 * (y1 - y0)];
return Math.abs(s.shown.plane[0] - u) < 1e-3 * (x1 - x0) && Math.abs(s.shown.plane[1] - v) < 1e-3 * (y1 - y0);
"""  # nothing in flight or waiting, and the decode shown is that of the point under the pointer


def _decoded(driver) -> str:
    return driver.execute_script("return document.getElementById('decoded').toDataURL()")


def _settled(driver) -> None:
    """No decode in flight and none waiting: the last answer is on the page."""
    time.sleep(0.05)
    _until(driver, "const s = window.aelabExplore; return s.decodes > 0 && document.getElementById('status')"
                   ".textContent.startsWith('decode')")


def test_the_page_loads_from_aelab_alone_with_a_point_per_test_code(page) -> None:
    from selenium.webdriver.common.by import By

    driver, url = page
    assert len(driver.find_elements(By.CSS_SELECTOR, "#codes circle")) == TEST_EXAMPLES
    assert len(driver.find_elements(By.CSS_SELECTOR, "#prior circle")) == 300
    assert len(driver.find_elements(By.CSS_SELECTOR, "#sliders input[type=range]")) == 2
    loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(name.startswith(url) for name in loaded), loaded  # every script, style and call: here
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_the_pointer_a_slider_and_two_examples_change_the_decode(page) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver, _ = page
    driver.execute_script(COUNT_DECODES)
    plane = driver.find_element(By.ID, "plane")
    ActionChains(driver).move_to_element_with_offset(plane, -200, -200).perform()  # the top left of the plane
    _settled(driver)
    before = _decoded(driver)
    sweep = ActionChains(driver, duration=0).move_to_element_with_offset(plane, -150, -150)
    for _ in range(30):  # a fast stroke towards the bottom right: far more pointer moves than decodes
        sweep.move_by_offset(12, 12)
    sweep.perform()
    _until(driver, f"return document.getElementById('decoded').toDataURL() !== {before!r}")
    assert driver.find_element(By.ID, "decoded-what").text == "under the pointer"
    _until(driver, LAST_POSITION_SHOWN)  # the latest pointer position wins: its decode is the one shown at the end
    count = driver.execute_script("return window.aelabCount")
    assert count["most"] == 1 and 1 <= count["sent"] <= 32  # never two decodes at once, and fewer than the moves

    ActionChains(driver).move_to_element(driver.find_element(By.ID, "sliders")).perform()  # off the plane
    _until(driver, "return document.getElementById('decoded-what').textContent === 'the current code'")
    _settled(driver)
    before, code = _decoded(driver), driver.execute_script("return window.aelabExplore.code.slice()")
    slider = driver.find_elements(By.CSS_SELECTOR, "#sliders input[type=range]")[0]
    slider.send_keys(*[Keys.ARROW_RIGHT] * 40)  # a live traversal of the most informative dimension
    _until(driver, f"return document.getElementById('decoded').toDataURL() !== {before!r}")
    moved = driver.execute_script("return window.aelabExplore.code.slice()")
    first = int(slider.get_attribute("id")[1:])
    assert moved[first] > code[first] and moved[1 - first] == pytest.approx(code[1 - first])

    circles = driver.find_elements(By.CSS_SELECTOR, "#codes circle")
    for circle in (circles[3], circles[20]):
        ActionChains(driver).move_to_element(circle).click().perform()
    frames = _until(driver, "const f = document.querySelectorAll('#strip canvas.frame'); return f.length && f.length")
    assert frames == 10 and len(driver.find_elements(By.CSS_SELECTOR, "#strip canvas.end")) == 2
    assert driver.find_element(By.ID, "path").get_attribute("points").count(",") == 10
    assert "→ B: #" in driver.find_element(By.ID, "ends-what").text
