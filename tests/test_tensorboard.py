"""A tiny run's TensorBoard logs, served by a real ``tensorboard`` server and read back through
its HTTP API (the routes of the scalars, images, histograms, text and hparams plugins)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hardattn.config import TrainConfig

B = 16
N_UPDATES = 8


def tiny(run_dir: Path) -> TrainConfig:
    """A seconds-long GlimpseMNIST-v0 run that writes every kind of summary."""
    return TrainConfig(agent="reinforce", env="GlimpseMNIST-v0", device="cpu", batch_size=B,
                       total_images=B * N_UPDATES, eval_every=4, eval_size=100, test_size=100,
                       eval_batch=100, log_every=1, image_every=2, grad_stats_every=2,
                       checkpoint_every=4, progress=False, run_dir=str(run_dir),
                       core_hidden=64, glimpse_hidden=64, what_hidden=32, where_hidden=32)


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    from hardattn.agents.run import train

    run = tmp_path_factory.mktemp("tb") / "run"
    report = train(tiny(run))
    return run, report


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, base: str, proc: subprocess.Popen, log: Path) -> None:
        self.base, self.proc, self.log = base, proc, log

    def get(self, route: str, body: dict | None = None) -> bytes:
        """GET ``route``, or POST ``body`` as JSON (the hparams plugin's routes)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + route, data=data,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200, route
            return r.read()

    def json(self, route: str, body: dict | None = None):
        return json.loads(self.get(route, body))

    def wait_for(self, route: str, ready, what: str, timeout: float = 60.0):
        """Poll ``route`` until ``ready(json)``: the server loads event files in the background."""
        end, last = time.monotonic() + timeout, None
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                pytest.fail(f"tensorboard exited ({self.proc.returncode}):\n"
                            f"{self.log.read_text()}")
            try:
                last = self.json(route)
                if ready(last):
                    return last
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                pass
            time.sleep(0.25)
        pytest.fail(f"tensorboard served no {what} in {timeout} s (last answer {last!r}); "
                    f"log:\n{self.log.read_text()}")


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    exe = Path(sys.executable).with_name("tensorboard")
    if not exe.exists():
        pytest.skip(f"no tensorboard executable next to {sys.executable}")
    run, _ = trained
    port = free_port()
    log = tmp_path_factory.mktemp("tb_server") / "tensorboard.log"
    with open(log, "w") as out:
        # Its own process group: the server and its data-server child go down together.
        proc = subprocess.Popen([str(exe), "--logdir", str(run), "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    srv = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        srv.wait_for("/data/runs", lambda runs: "." in runs, "run '.'")
        yield srv
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def steps(points) -> list[int]:
    return [p[1] for p in points]  # [wall_time, step, value]


def test_scalars_are_served(server, trained):
    _, report = trained
    tags = server.wait_for("/data/plugin/scalars/tags",
                           lambda t: "hparam/test_error" in t.get(".", {}), "final scalars")["."]
    for tag in ("eval/accuracy", "eval/error", "train/loss", "train/loss_reinforce",
                "train/loss_classify", "train/loss_baseline", "train/grad_norm", "train/lr",
                "rollout/accuracy", "rollout/reward", "time/images_per_s", "time/elapsed_s",
                "attention/location_std", "attention/grad_var", "attention/grad_snr",
                "hparam/val_error", "hparam/test_error"):
        assert tag in tags, tag

    every = [B * (u + 1) for u in range(N_UPDATES)]  # the step is training images
    loss = server.json("/data/plugin/scalars/scalars?run=.&tag=train/loss")
    assert steps(loss) == every
    ips = server.json("/data/plugin/scalars/scalars?run=.&tag=time/images_per_s")
    assert steps(ips) == every and all(p[2] > 0 for p in ips)
    acc = server.json("/data/plugin/scalars/scalars?run=.&tag=eval/accuracy")
    err = server.json("/data/plugin/scalars/scalars?run=.&tag=eval/error")
    assert steps(acc) == steps(err) == [4 * B, 8 * B]  # eval_every=4
    assert all(abs(a[2] + e[2] - 100.0) < 1e-4 for a, e in zip(acc, err))
    assert min(e[2] for e in err) == pytest.approx(report["val_error_pct"])
    snr = server.json("/data/plugin/scalars/scalars?run=.&tag=attention/grad_snr")
    assert steps(snr) == [B * (u + 1) for u in (0, 2, 4, 6, 7)]  # every 2 updates and the last
    var = server.json("/data/plugin/scalars/scalars?run=.&tag=attention/grad_var")
    assert all(p[2] >= 0 for p in var)
    csv = server.get("/data/plugin/scalars/scalars?run=.&tag=eval/accuracy&format=csv").decode()
    assert csv.splitlines()[0].lower().replace(" ", "") == "walltime,step,value"


def test_glimpse_images_are_served(server):
    tags = server.wait_for("/data/plugin/images/tags",
                           lambda t: "attention/glimpse_paths_test" in t.get(".", {}),
                           "images")["."]
    assert "attention/glimpse_paths_val" in tags
    val = server.json("/data/plugin/images/images?run=.&tag=attention/glimpse_paths_val")
    assert [v["step"] for v in val] == [4 * B, 8 * B]
    png = server.get("/data/plugin/images/individualImage?" + val[-1]["query"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    test = server.json("/data/plugin/images/images?run=.&tag=attention/glimpse_paths_test")
    assert [v["step"] for v in test] == [N_UPDATES * B]


def test_location_histograms_and_config_text_are_served(server):
    hist = server.wait_for("/data/plugin/histograms/tags",
                           lambda t: "attention/locations_y" in t.get(".", {}), "histograms")
    assert "attention/locations_x" in hist["."]
    xs = server.json("/data/plugin/histograms/histograms?run=.&tag=attention/locations_x")
    assert [h[1] for h in xs] == [B * (u + 1) for u in (0, 2, 4, 6, 7)]  # [wall, step, buckets]
    text = server.wait_for("/data/plugin/text/tags", lambda t: t.get("."), "text")["."]
    assert text == ["config/text_summary"]
    config = server.json("/data/plugin/text/text?run=.&tag=config/text_summary")
    assert "core_hidden" in config[0]["text"] and "GlimpseMNIST-v0" in config[0]["text"]


def test_hparams_with_the_test_error_are_served(server, trained):
    _, report = trained
    server.wait_for("/data/plugin/scalars/tags",
                    lambda t: "hparam/test_error" in t.get(".", {}), "hparam metrics")
    exp = server.json("/data/plugin/hparams/experiment", {"experimentName": ""})
    names = {h["name"] for h in exp["hparamInfos"]}
    assert {"agent", "env", "seed", "lr", "baseline", "core_hidden", "batch_size"} <= names
    assert "resume" not in names  # None-valued fields are left out
    metrics = {m["name"]["tag"] for m in exp["metricInfos"]}
    assert {"hparam/test_error", "hparam/val_error"} <= metrics

    groups = server.json("/data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS",
                                                  "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [], "startIndex": 0, "sliceSize": 10})
    assert groups["totalSize"] == 1
    group = groups["sessionGroups"][0]
    assert group["hparams"]["core_hidden"] == 64 and group["hparams"]["agent"] == "reinforce"
    values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
    assert values["hparam/test_error"] == pytest.approx(report["test_error_pct"])
    assert values["hparam/val_error"] == pytest.approx(report["val_error_pct"])
