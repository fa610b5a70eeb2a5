"""aelab explore's server, in process on an ephemeral port through urllib / http.client: the page's assets alone,
the endpoints' answers against the model interface, every bad request a 4xx with one JSON line (no path leads
outside the fixed assets, nothing is written), and the command's port errors and clean Ctrl-C as a process."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

import aelab
from aelab.commands.explore import started
from aelab.commands.interpolate import PATHS, decoded_paths
from aelab.config_check import check_explore
from aelab.engine.build import build_trainer
from aelab.errors import UserError
from aelab.viz.live.explorer import Explorer
from aelab.viz.live.server import BadRequest
from aelab.viz.views import traversal_order
from conftest import REPO, TINY, cli_env

CPU = torch.device("cpu")
TEST_EXAMPLES = 32  # data=synthetic data.source.n=256: test_fraction 0.125


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="aelab.conf", version_base="1.3"):
            return compose(config_name="explore", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained 2-D VAE (one epoch on 256 synthetic images)."""
    root = tmp_path_factory.mktemp("explore")
    return aelab.train(["data=synthetic", "data.source.n=256", "model=vae", "latent_dim=2", "epochs=1",
                        "batch_size=64", "device=cpu", "logger=none", "threads=1", f"hydra.run.dir={root / 'vae'}"]).run_dir


@pytest.fixture(scope="module")
def served(run_dir: Path):
    """The command's server on a free port, serving from a thread; (base URL, session)."""
    cfg = _compose([f"run={run_dir}", "device=cpu", "threads=1", "prior_points=200"])
    with started(cfg) as (server, session):
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        yield server.url, session
        server.shutdown()


def _call(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def _raw(url: str, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """A request exactly as written (no URL normalisation): status and the JSON it answered."""
    port = int(url.rsplit(":", 1)[1].strip("/"))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    reply = connection.getresponse()
    status, data = reply.status, reply.read()
    connection.close()
    assert reply.getheader("Content-Type") == "application/json", (path, data[:200])
    return status, json.loads(data)


def _pixels(payload: dict) -> np.ndarray:  # -> (n, h, w, c) uint8
    assert payload["kind"] == "image"
    return np.frombuffer(base64.b64decode(payload["data"]), dtype=np.uint8).reshape(payload["shape"])


def _as_bytes(images: torch.Tensor) -> np.ndarray:  # (n, c, h, w) in [0, 1] -> (n, h, w, c) uint8, as the server
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_the_page_is_aelabs_own_files_and_nothing_else(served) -> None:
    url, _ = served
    with urllib.request.urlopen(url, timeout=10) as reply:
        html = reply.read().decode()
        assert reply.headers["Content-Type"].startswith("text/html")
        assert "default-src 'self'" in reply.headers["Content-Security-Policy"]
    links = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert sorted(links) == ["data:,", "explore.css", "explore.js"]  # relative: served here, no CDN
    for name in ("explore.js", "explore.css"):
        with urllib.request.urlopen(url + name, timeout=10) as reply:
            text = reply.read().decode()
        assert "http" not in text and "//cdn" not in text and "import(" not in text


def test_info_plane_and_the_decode_of_a_point(served) -> None:
    url, session = served
    model = session.model
    info = _call(url + "api/info")
    assert (info["latent_dim"], info["kind"], info["shape"], info["order"]) == (2, "image", [1, 16, 16], "KL")
    order, kl = traversal_order(model, session.split.head(TEST_EXAMPLES).x)
    assert [d["dim"] for d in info["dims"]] == order  # the sliders: most KL first
    assert info["prior"] == "the prior" and info["by_class"] is None and info["classes"][0] == "horizontal bar"
    plane = _call(url + "api/plane")
    assert plane["proj"] == "0,1" and len(plane["points"]) == len(plane["labels"]) == TEST_EXAMPLES
    assert len(plane["prior"]) == 200
    codes = model.encode(session.split.head(TEST_EXAMPLES).x).detach()
    np.testing.assert_allclose(plane["points"], codes.numpy(), rtol=1e-4, atol=1e-5)

    (x0, x1), (y0, y1) = plane["bounds"]
    point = [x0 + 0.3 * (x1 - x0), y0 + 0.8 * (y1 - y0)]
    reply = _call(url + "api/decode", {"code": [0.0, 0.0], "plane": point, "proj": "0,1"})
    assert reply["code"] == pytest.approx(point) and reply["plane"] == pytest.approx(point, abs=1e-4)
    expected = model.likelihood.mean(model.decode(torch.tensor([point]))).detach()
    assert np.abs(_pixels(reply["decoded"]).astype(int) - _as_bytes(expected).astype(int)).max() <= 1

    example = _call(url + "api/decode", {"index": 5, "proj": "0,1"})
    assert example["example"]["index"] == 5 and example["code"] == pytest.approx(codes[5].tolist(), abs=1e-5)
    assert (_pixels(example["example"]["input"]) == _as_bytes(session.split.take([5]).x)).all()


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_interpolation_is_the_one_aelab_interpolate_draws(served, method: str) -> None:
    url, session = served
    reply = _call(url + "api/interpolate", {"from": 2, "to": 9, "method": method, "steps": 7, "proj": "0,1"})
    assert reply["steps"] == 7 and len(reply["path"]) == 7 and reply["labels"] == session.split.take([2, 9]).y.tolist()
    batch = session.split.take([2, 9])
    expected = decoded_paths(session.model, batch.x, None, method, 7)[0]  # (7, 1, 16, 16)
    assert np.abs(_pixels(reply["frames"]).astype(int) - _as_bytes(expected).astype(int)).max() <= 1
    assert _pixels(reply["inputs"]).shape == (2, 16, 16, 1)


def test_a_decode_answers_well_within_50_ms(served) -> None:
    url, _ = served
    (x0, x1), (y0, y1) = _call(url + "api/plane")["bounds"]
    times = []
    for k in range(30):  # the page's pointer: the current code moved to a point of the plane
        point = [x0 + (x1 - x0) * (k % 7) / 7, y0 + (y1 - y0) * (k % 5) / 5]
        started_at = time.perf_counter()
        _call(url + "api/decode", {"code": [0.0, 0.0], "plane": point, "proj": "0,1"})
        times.append(1000 * (time.perf_counter() - started_at))
    assert statistics.median(times) < 50, times


def test_the_docs_requests_and_commands_work(served, run_dir) -> None:
    url, _ = served
    text = (REPO / "docs" / "explore.md").read_text()
    requests = [line for block in re.findall(r"```http\n(.*?)```", text, re.S) for line in block.splitlines()]
    assert len(requests) >= 6
    for line in requests:
        method, path, *body = line.split(" ", 2)
        status, reply = _raw(url, method, path, body[0].encode() if body else None)
        assert status == 200 and "error" not in reply, (line, reply)
    commands = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()
                if line.startswith("aelab explore ")]
    assert len(commands) >= 4
    for line in commands:  # every key the page names exists and takes the value shown
        overrides = [f"run={run_dir}" if a.startswith("run=") else a for a in shlex.split(line)[2:]]
        check_explore(_compose(overrides))


BAD_REQUESTS = [  # method, path, body, extra headers, status, words of the message
    ("GET", "/api/nothing", None, None, 404, "no such page"),
    ("GET", "/../../etc/passwd", None, None, 404, "no such page"),
    ("GET", "/%2e%2e/%2e%2e/etc/passwd", None, None, 404, "no such page"),
    ("GET", "/explore.js/../../checkpoints/last.pt", None, None, 404, "no such page"),
    ("GET", "/static/../checkpoints/last.pt", None, None, 404, "no such page"),
    ("GET", "/checkpoints/last.pt", None, None, 404, "no such page"),
    ("GET", "//etc/passwd", None, None, 404, "no such page"),
    ("POST", "/", b"{}", None, 405, "POST is not allowed"),
    ("GET", "/api/decode", None, None, 405, "GET is not allowed"),
    ("PUT", "/api/decode", b"{}", None, 405, "PUT is not allowed"),
    ("POST", "/api/decode", b"{not json", None, 400, "body: not JSON"),
    ("POST", "/api/decode", b"[1, 2]", None, 400, "a JSON object expected"),
    ("POST", "/api/decode", b'{"code": [0, 0]}', {"Content-Type": "text/plain"}, 415, "application/json"),
    ("POST", "/api/decode", b'{"code": [0, 0], "file": "../x"}', None, 400, "file: unknown field"),
    ("POST", "/api/decode", b"{}", None, 400, "code: missing"),
    ("POST", "/api/decode", b'{"code": [0, 0, 0]}', None, 400, "code: 2 numbers expected, got 3 values"),
    ("POST", "/api/decode", b'{"code": [0, "a"]}', None, 400, "numbers only"),
    ("POST", "/api/decode", b'{"code": [NaN, 0]}', None, 400, "NaN or infinite"),
    ("POST", "/api/decode", b'{"code": [1e9, 0]}', None, 400, "z0 = 1e+09 is outside the explorable range"),
    ("POST", "/api/decode", b'{"code": [0, 0], "plane": [50, 0], "proj": "0,1"}', None, 400,
     "plane: (50, 0) is outside the plane"),
    ("POST", "/api/decode", b'{"code": [0, 0], "plane": [0, 0]}', None, 400, "needs proj"),
    ("POST", "/api/decode", b'{"code": [0, 0], "plane": [0, 0], "proj": "pca"}', None, 400,
     "PCA needs codes of 3 or more"),
    ("POST", "/api/decode", b'{"code": [0, 0], "proj": "0,0"}', None, 400, "does not name 2 different"),
    ("POST", "/api/decode", b'{"index": 99999}', None, 400, "index: no example 99999"),
    ("POST", "/api/decode", b'{"index": 1, "code": [0, 0]}', None, 400, "not both"),
    ("POST", "/api/decode", b'{"code": [0, 0], "y": 1}', None, 400, "does not decode by class"),
    ("POST", "/api/interpolate", b'{"from": 0, "to": 1, "steps": 1000}', None, 400, "steps: 1000"),
    ("POST", "/api/interpolate", b'{"from": 0, "to": 1, "method": "cubic"}', None, 400, "method: unknown method"),
    ("POST", "/api/interpolate", b'{"from": 0}', None, 400, "to: no example None"),
    ("GET", "/api/plane?proj=5,7", None, None, 400, "does not name 2 different dimensions"),
    ("GET", "/api/plane?file=/etc/passwd", None, None, 400, "unknown parameter 'file'"),
    ("POST", "/api/decode", b"x" * 70000, None, 413, "at most"),
    ("GET", "/", None, {"Host": "attacker.example:80"}, 403, "is not this machine"),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "words"), BAD_REQUESTS,
                         ids=[f"{r[0]} {r[1][:30]} {r[4]}" for r in BAD_REQUESTS])
def test_a_bad_request_is_a_4xx_with_one_line_and_reads_nothing(served, run_dir, method, path, body, headers,
                                                                   status, words) -> None:
    url, _ = served
    before = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*"))
    got, reply = _raw(url, method, path, body, headers)
    assert (got, set(reply)) == (status, {"error"}) and words in reply["error"] and "\n" not in reply["error"]
    assert sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")) == before  # nothing written


def test_pca_and_two_dimensions_map_the_plane_back_to_a_full_code(compose_cfg) -> None:
    trainer, data = build_trainer(compose_cfg([*TINY, "model=vae", "latent_dim=16", "data.source.n=128"]), CPU, "unused")
    model = trainer.model.eval()
    app = Explorer(model, data.test, paths=PATHS, prior=torch.randn(100, 16))
    info = app.info()
    assert info["projections"] == ["pca", "dims"] and info["proj"] == "pca"
    assert [d["dim"] for d in info["dims"]] == traversal_order(model, data.test.head(2000).x)[0]
    current = app.decode({"index": 3})["code"]
    plane = app.plane("pca")
    assert len(plane["points"]) == len(data.test) and plane["axes"][0].startswith("PC1")
    (x0, x1), (y0, y1) = plane["bounds"]
    point = [(x0 + x1) / 2, y0 + 0.25 * (y1 - y0)]
    moved = torch.tensor(app.decode({"code": current, "plane": point, "proj": "pca"})["code"], dtype=torch.float64)
    pca = app._plane("pca")
    step = moved - torch.tensor(current, dtype=torch.float64)
    assert pca.coords(moved[None])[0].tolist() == pytest.approx(point, abs=1e-5)  # on the plane where pointed
    assert (step - pca.basis @ (pca.basis.T @ step)).abs().max() < 1e-5  # moved within the plane only
    # two chosen dimensions: those set, the rest as the current code has them
    reply = app.decode({"code": current, "plane": [0.5, -0.25], "proj": [7, 2]})
    expected = list(current)
    expected[7], expected[2] = 0.5, -0.25
    assert reply["code"] == pytest.approx(expected, abs=1e-6) and reply["plane"] == pytest.approx([0.5, -0.25])


def test_a_conditional_run_decodes_the_same_code_as_every_class(compose_cfg) -> None:
    trainer, data = build_trainer(compose_cfg([*TINY, "model=cvae", "latent_dim=3", "data.source.n=128"]), CPU, "unused")
    model = trainer.model.eval()
    app = Explorer(model, data.test, paths=PATHS, class_names=data.class_names)
    assert app.info()["by_class"] == "label" and app.info()["num_classes"] == 4
    code = [0.5, -1.0, 0.25]
    every = _pixels(app.decode({"code": code, "y": "all"})["decoded"])
    expected = model.likelihood.mean(model.decode(torch.tensor([code]).expand(4, -1), torch.arange(4))).detach()
    assert every.shape == (4, 16, 16, 1) and np.abs(every.astype(int) - _as_bytes(expected).astype(int)).max() <= 1
    one = _pixels(app.decode({"code": code, "y": 2})["decoded"])
    assert (one[0] == every[2]).all()
    for y, words in ((None, "decodes with a class"), (4, "no class 4"), (True, "no class True")):
        with pytest.raises(BadRequest, match=words):
            app.decode({"code": code, "y": y})
    path = app.interpolate({"from": 0, "to": 1, "steps": 3})  # without y: the first example's class, as interpolate
    assert path["y"] == int(data.test.take([0]).y)


def test_a_supervised_aae_moves_the_code_into_each_class(compose_cfg) -> None:
    cfg = compose_cfg([*TINY, "model=aae", "latent_dim=2", "model.supervised=true", "model.prior=mixture",
                       "data.source.n=128"])
    trainer, data = build_trainer(cfg, CPU, "unused")
    model = trainer.model.eval()
    app = Explorer(model, data.test, paths=PATHS, prior=model.prior_codes(100))
    assert app.info()["by_class"] == "shift"
    labels = data.test.head(len(data.test)).y
    centres = torch.stack([app.codes[labels == c].mean(0) for c in range(4)])
    z = app.codes[0]
    nearest = int((centres - z).norm(dim=1).argmin())
    reply = app.decode({"code": z.tolist(), "y": 3})
    expected = model.likelihood.mean(model.decode((z - centres[nearest] + centres[3]).float()[None])).detach()
    assert np.abs(_pixels(reply["decoded"]).astype(int) - _as_bytes(expected).astype(int)).max() <= 1
    assert app.decode({"code": z.tolist()})["decoded"] == app.decode({"code": z.tolist(), "y": nearest})["decoded"]


def test_a_table_run_answers_in_the_tables_own_units(compose_cfg, tmp_path) -> None:
    rng = np.random.default_rng(0)
    rows = 1000.0 + 50.0 * rng.normal(size=(200, 3)) @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 2.0], [0.0, 0.0, 1.0]])
    path = tmp_path / "table.csv"
    np.savetxt(path, rows, delimiter=",", header="height,weight,age", comments="", fmt="%.4f")
    cfg = compose_cfg([*TINY, "model=ae", "latent_dim=2", "data=csv", f"data.path={path}", "arch=mlp"])
    trainer, data = build_trainer(cfg, CPU, "unused")
    model = trainer.model.eval()
    app = Explorer(model, data.test, paths=PATHS, standardization=data.standardization)
    info = app.info()
    assert (info["kind"], info["columns"], info["units"]) == ("vector", ["height", "weight", "age"], "the table's own units")
    mean = torch.tensor(data.standardization["mean"], dtype=torch.float64)
    std = torch.tensor(data.standardization["std"], dtype=torch.float64)
    reply = app.decode({"index": 4})
    decoded = model.likelihood.mean(model.decode(app.codes[4].float()[None])).detach().double() * std + mean
    assert reply["decoded"]["rows"][0] == pytest.approx(decoded[0].tolist(), rel=1e-5)
    raw = data.test.take([4]).x.double() * std + mean
    assert reply["example"]["input"]["rows"][0] == pytest.approx(raw[0].tolist(), rel=1e-5)
    assert 500 < np.mean(reply["example"]["input"]["rows"][0]) < 5000  # the table's units, not standardised ones
    assert app.interpolate({"from": 0, "to": 1, "steps": 4})["frames"]["shape"] == [4, 3]


def test_the_commands_mistakes_are_one_line(run_dir, tmp_path) -> None:
    for overrides, words in (([f"run={tmp_path / 'nope'}"], "run: no such directory"),
                             ([f"run={run_dir}", "port=70000"], "port:"),
                             ([f"run={run_dir}", "prior=fancy"], "prior:"),
                             ([f"run={run_dir}", "steps=1"], "steps:")):
        with pytest.raises(UserError, match=words):
            check_explore(_compose(overrides))


def test_a_busy_port_is_one_line_before_the_run_is_opened(served, run_dir) -> None:
    url, _ = served
    port = url.rsplit(":", 1)[1].strip("/")
    with pytest.raises(UserError) as caught, started(_compose([f"run={run_dir}", f"port={port}"])):
        pass
    assert caught.value.line() == f"error: port: {port} is in use on 127.0.0.1 (another port, or port=0 for a free one)"


def test_ctrl_c_stops_the_server_cleanly(run_dir, tmp_path) -> None:
    command = [sys.executable, "-m", "aelab", "explore", f"run={run_dir}", "device=cpu", "threads=1", "port=0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**cli_env(tmp_path), "OMP_NUM_THREADS": "1"})
    try:
        lines = [server.stdout.readline() for _ in range(2)]
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", lines[1])
        assert match, lines
        assert _call(match.group(0) + "api/info")["latent_dim"] == 2
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=20)
        assert server.returncode == 0 and err.strip() == "explore: stopped"
        with pytest.raises(urllib.error.URLError):
            _call(match.group(0) + "api/info")
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
