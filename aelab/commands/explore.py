"""`aelab explore run=<dir>`: a trained run's latent space, live in the browser.

A local server (127.0.0.1, `port=`, a free one by default) serves one page, every asset from aelab itself: the
split's codes as a scatter coloured by class over the prior's draws, the decode of the point under the pointer,
a slider per code dimension (by KL for VAE-type families), the interpolation between two clicked examples, and
a class selector for runs that decode by class. Ctrl-C stops it. Nothing is written: the run is only read.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from aelab.commands._common import hydra_entry
from aelab.commands.samplers import choose_sampler
from aelab.commands.session import RunSession, open_run
from aelab.config_check import check_explore

if TYPE_CHECKING:
    from aelab.viz.live.explorer import Explorer
    from aelab.viz.live.server import ExploreServer


def build_explorer(session: RunSession, cfg: DictConfig) -> Explorer:
    """The model side of the page: the split's codes, the prior's draws behind them, lerp and slerp."""
    import torch

    from aelab.commands.interpolate import PATHS
    from aelab.viz.live.explorer import Explorer, prior_draws

    model = session.model
    prior, source = None, None
    if str(cfg.prior) != "none" and int(cfg.prior_points) > 0:
        sampler = choose_sampler(session, str(cfg.prior), "prior", gaussian_fallback=False)
        if sampler is not None:
            n = int(cfg.prior_points)
            with torch.no_grad():
                prior = prior_draws(model, n) if sampler.draw_codes is None else sampler.draw_codes(n).double().cpu()
            source = sampler.source
    data = session.data
    return Explorer(model, session.split, points=int(cfg.points), class_names=data.class_names,
                    standardization=session.standardization, prior=prior, prior_source=source, paths=PATHS,
                    method=str(cfg.method), steps=int(cfg.steps), run_name=str(session.run.run_dir),
                    data_name=str(data.name), split_name=session.split_name)


@contextmanager
def started(cfg: DictConfig) -> Iterator[tuple[ExploreServer, RunSession]]:
    """The server bound (a busy port fails before the run is loaded) and the run opened; serving is the caller's
    (serve_forever here, a thread in the tests). Closed however the block ends."""
    from aelab.viz.live.server import ExploreServer

    check_explore(cfg)
    server = ExploreServer(int(cfg.port))
    try:
        with open_run(cfg, "explore", writes=False) as session:
            server.app = build_explorer(session, cfg)
            yield server, session
    finally:
        server.server_close()


def serve(server: ExploreServer) -> None:
    """Serve until Ctrl-C (or SIGTERM): both end the loop here, and the command returns normally. SIGINT is
    caught even where it was ignored at start (a shell script's background job), so Ctrl-C always stops it."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run(cfg: DictConfig) -> dict[str, Any]:
    with started(cfg) as (server, session):
        app, url = server.app, server.url
        model = session.model
        print(f"explore: {session.run.run_dir} ({type(model).__name__}, {app.d}-D codes, {len(app.codes)} "
              f"{session.split_name} examples{', prior: ' + app.prior_source if app.prior_source else ''})", flush=True)
        print(f"open {url} in a browser (Ctrl-C stops)", flush=True)
        if bool(cfg.open):
            import webbrowser

            threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
        serve(server)
        print("explore: stopped", file=sys.stderr, flush=True)
        return {"url": url, "port": server.port, "points": len(app.codes)}


main = hydra_entry(run)
