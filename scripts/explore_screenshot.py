"""A headless screenshot of `aelab explore` on a trained run, and its decode latency.

    python scripts/explore_screenshot.py outputs/<date>/<time>_vae --out docs/gallery/explore.png
    python scripts/explore_screenshot.py outputs/<date>/<time>_vae --latency 200     # no browser needed

The page is driven the way a user would: the pointer rests on the plane (a live decode), two examples are clicked
(the interpolation). Needs Chromium and its driver (Debian: apt-get install chromium chromium-driver) and selenium.
The latency is the median round trip of POST /api/decode over HTTP (a code moved to a random point of the
plane, as the page sends on each pointer move), measured with urllib on this machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import threading
import time
import urllib.request
from pathlib import Path

CHROMEDRIVER = "/usr/bin/chromedriver"  # Debian's chromium-driver: selenium never downloads one


def chrome(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def latency(url: str, n: int) -> dict[str, float]:
    """Median, 10% and 90% round trip (ms) of n decodes of random points of the default plane."""
    import random

    def call(path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as reply:
            return json.loads(reply.read())

    info = call("api/info")
    plane = call(f"api/plane?proj={info['proj']}")
    (x0, x1), (y0, y1) = plane["bounds"]
    code = call("api/decode", {"index": 0})["code"]
    rng, times, server = random.Random(0), [], []
    for _ in range(n):
        point = [rng.uniform(x0, x1), rng.uniform(y0, y1)]
        started = time.perf_counter()
        reply = call("api/decode", {"code": code, "plane": point, "proj": info["proj"]})
        times.append(1000 * (time.perf_counter() - started))
        server.append(reply["ms"])
    q = statistics.quantiles(times, n=10)
    return {"median_ms": statistics.median(times), "p10_ms": q[0], "p90_ms": q[-1],
            "server_median_ms": statistics.median(server), "latent_dim": info["latent_dim"]}


def screenshot(url: str, out: Path, width: int, height: int, ends: tuple[int, int]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chrome(width, height)
    try:
        driver.get(url)
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
        circles = driver.find_elements(By.CSS_SELECTOR, "#codes circle")
        for i in ends:  # two examples: the interpolation strip and its path
            ActionChains(driver).move_to_element(circles[i]).click().perform()
            time.sleep(0.3)
        plane = driver.find_element(By.ID, "plane")
        ActionChains(driver).move_to_element_with_offset(plane, 60, -40).perform()  # a live decode under the pointer
        time.sleep(0.8)
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a training run directory")
    parser.add_argument("--out", type=Path, default=None, help="where the PNG goes (none: no screenshot)")
    parser.add_argument("--latency", type=int, default=0, help="decodes to time (0: none)")
    parser.add_argument("--size", default="1280x860", help="the browser window, WIDTHxHEIGHT")
    parser.add_argument("--ends", default="3,11", help="the two examples clicked, e.g. 3,11")
    parser.add_argument("overrides", nargs="*", help="explore's keys, e.g. threads=1 points=1000")
    args = parser.parse_intermixed_args()

    from hydra import compose, initialize_config_module

    import aelab.sweep.rundirs  # noqa: F401  (the configs' resolvers)
    from aelab.commands.explore import started

    with initialize_config_module(config_module="aelab.conf", version_base="1.3"):
        cfg = compose(config_name="explore", overrides=[f"run={args.run}", *args.overrides])
    with started(cfg) as (server, _):
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            if args.latency:
                print(json.dumps(latency(server.url, args.latency)))
            if args.out is not None:
                width, height = (int(v) for v in args.size.lower().split("x"))
                a, b = (int(v) for v in args.ends.split(","))
                screenshot(server.url, args.out, width, height, (a, b))
                print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KB")
        finally:
            server.shutdown()


if __name__ == "__main__":
    main()
