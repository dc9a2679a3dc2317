"""``python -m more ui`` in a real headless Chromium: the runs page it links to lists the tracked runs; their names
and a metric value render.

Chromium is not installed by the tests: ``apt-get install -y chromium`` (CI does it). Without it this test fails,
unless ``MORE_SKIP_BROWSER=1`` asks to skip it. The screenshot is kept in ``work/test-artifacts/``.
"""

from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from more.__main__ import main
from more.tracking import LaunchTracker, TrialTracker, trial_key
from more.tracking.store import free_port

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=15000", "--window-size=1400,1000"]
# trial name -> last val/seg/miou (the compare page shows two decimals)
CHILDREN = {"more-s0": 61.25, "wo_cre-s0": 47.75}


def require_chromium() -> None:
    if CHROMIUM.is_file():
        return
    if os.environ.get("MORE_SKIP_BROWSER") == "1":
        pytest.skip("MORE_SKIP_BROWSER=1 and /usr/bin/chromium is missing")
    pytest.fail("/usr/bin/chromium is missing: install it with `apt-get install -y chromium` "
                "(or set MORE_SKIP_BROWSER=1 to skip the browser test)")


def page_text(dom: str) -> str:
    """The visible text of a dumped DOM: styles and scripts dropped, tags removed, whitespace collapsed."""
    dom = re.sub(r"<(style|script)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def chromium(url: str, *, screenshot: Path | None = None) -> str:
    """Load ``url`` headless and return the DOM after the page's scripts ran."""
    with tempfile.TemporaryDirectory() as profile:
        args = [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url]
        if screenshot is not None:
            args.insert(-2, f"--screenshot={screenshot}")
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=150)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return out


def tracked_store(uri: str) -> tuple[str, str, dict[str, str]]:
    """A launch run with two trial runs logging ``val/seg/miou`` at steps 3 and 6."""
    launch = LaunchTracker.start(uri, "ui_spec", "c0ffee000001", "name: ui_spec\n", "abc", strict=True)
    ids = {}
    for name, last in CHILDREN.items():
        with TrialTracker.open(uri, launch.run_id, trial_key("c0ffee000001", name), {"more.kind": "trial"},
                               strict=True) as trial:
            report = trial.report_callback()
            report({"iter": 3.0, "val/seg/miou": last / 2}, None)
            report({"iter": 6.0, "val/seg/miou": last}, None)
        ids[name] = trial.run_id
    return launch.experiment_id, launch.run_id, ids


class UiProcess:
    """``python -m more ui`` as a subprocess in its own session; its output lines are collected by a thread."""

    def __init__(self, uri: str, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "more", "ui", "--tracking-uri", uri, "--port", str(port)], cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")), daemon=True).start()

    def wait_for(self, pattern: str, timeout: float = 240.0) -> re.Match:
        """The first match of ``pattern`` in an output line, waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = re.search(pattern, line)
                if m:
                    return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        raise AssertionError(f"`more ui` printed no line matching {pattern!r} (exit {self.proc.poll()}):\n"
                             f"{''.join(self.lines)}")

    def wait_for_url(self, timeout: float = 240.0) -> tuple[str, int]:
        m = self.wait_for(r"MLflow UI: (http://\S+)\s+\(server pid (\d+)", timeout)
        return m.group(1), int(m.group(2))

    def kill_leftovers(self, server_pid: int | None) -> None:
        for pgid in (self.proc.pid, server_pid):
            if pgid is None:
                continue
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)


def test_missing_chromium_fails_with_the_install_command_unless_skipping_is_asked(monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("MORE_SKIP_BROWSER", raising=False)
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        require_chromium()
    monkeypatch.setenv("MORE_SKIP_BROWSER", "1")
    with pytest.raises(pytest.skip.Exception):
        require_chromium()


def test_ui_refuses_a_non_loopback_host_without_allow_remote(capsys):
    assert main(["ui", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_mlflow_ui_renders_the_tracked_runs_in_chromium(make_store):
    require_chromium()
    uri = make_store()
    experiment_id, parent_id, child_ids = tracked_store(uri)
    port = free_port()
    ui = UiProcess(uri, port)
    server_pid = None
    try:
        url, server_pid = ui.wait_for_url()
        assert url == f"http://127.0.0.1:{port}"

        # the runs page `more ui` links to (MLflow 3's landing page opens on its GenAI overview instead)
        link = ui.wait_for(r"^  ui_spec: (http://\S+)$", 30).group(1)
        assert link == f"{url}/#/experiments/{experiment_id}/runs"
        runs_page = page_text(chromium(link))
        assert "ui_spec-c0ffee000001" in runs_page  # the parent row
        assert "3 matching runs" in runs_page  # parent + both children loaded into the table

        # the runs table nests the children under the collapsed parent: the compare page shows them with metrics
        query = urllib.parse.urlencode({"runs": json.dumps(list(child_ids.values())),
                                        "experiments": json.dumps([experiment_id])})
        shots = REPO / "work" / "test-artifacts"
        shots.mkdir(parents=True, exist_ok=True)
        shot = shots / "mlflow-ui-compare-runs.png"
        shot.unlink(missing_ok=True)
        compare = page_text(chromium(f"{url}/#/compare-runs?{query}", screenshot=shot))
        for name, last in CHILDREN.items():
            assert name in compare
            assert str(last) in compare
        assert "val/seg/miou" in compare
        assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

        os.kill(ui.proc.pid, signal.SIGTERM)  # `more ui` stops its server's process group, then exits
        assert ui.proc.wait(timeout=60) == 0
        with pytest.raises(ProcessLookupError):
            os.killpg(server_pid, 0)
    finally:
        if ui.proc.poll() is None or server_pid is not None:
            ui.kill_leftovers(server_pid)
