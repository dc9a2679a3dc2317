"""``python -m more ui`` in a real headless Chromium: the link it prints opens the runs page on the trial runs,
ranked by the spec's metric with its values in a column; the MLflow server runs with telemetry off.

Chromium is found on PATH (`make test` installs Debian's package first when it runs as root, tools/ensure_chromium.sh).
Without it the browser test is skipped, with the reason in pytest's summary, unless ``MORE_REQUIRE_BROWSER=1`` (CI
sets it: there a missing browser fails); ``MORE_SKIP_BROWSER=1`` skips it. The screenshot is kept in
``work/test-artifacts/``.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from more.__main__ import main
from more.privacy import TELEMETRY_OFF
from more.tracking import LaunchTracker, TrialTracker, trial_key
from more.tracking.store import free_port

REPO = Path(__file__).resolve().parents[2]
INSTALL = "install it with `apt-get install -y chromium` (`make test` does that when run as root)"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  # nothing leaves the machine: no crash reports, pings or safe-browsing checks, and no name but
                  # 127.0.0.1 (where the pages are) resolves, so neither the browser nor a page can reach out
                  "--disable-breakpad", "--disable-domain-reliability", "--no-pings",
                  "--disable-client-side-phishing-detection",
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                  "--virtual-time-budget=15000", "--window-size=1400,1000"]
# trial name -> (condition, last val/seg/miou); the runs table shows the values as logged
CHILDREN = {"wo_cre-s0": ("wo_cre", 47.75), "more-s0": ("more", 61.25)}
SPEC_TEXT = "name: ui_spec\nmetric: val/seg/miou\nmode: max\n"


def require_chromium() -> str:
    """The ``chromium`` on PATH; else skip the test with the reason (fail under ``MORE_REQUIRE_BROWSER=1``)."""
    if os.environ.get("MORE_SKIP_BROWSER") == "1":
        pytest.skip("MORE_SKIP_BROWSER=1 asks to skip the browser test of the MLflow UI")
    found = shutil.which("chromium")
    if found:
        return found
    if os.environ.get("MORE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"chromium is not on PATH and MORE_REQUIRE_BROWSER=1 requires the browser test: {INSTALL}")
    pytest.skip(f"the browser test of the MLflow UI needs Chromium, which is not on PATH: {INSTALL}")


def page_text(dom: str) -> str:
    """The visible text of a dumped DOM: styles and scripts dropped, tags removed, whitespace collapsed."""
    dom = re.sub(r"<(style|script)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def chromium(url: str, *, screenshot: Path | None = None) -> str:
    """Load ``url`` headless and return the DOM after the page's scripts ran."""
    with tempfile.TemporaryDirectory() as profile:
        args = [require_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url]
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
    launch = LaunchTracker.start(uri, "ui_spec", "c0ffee000001", SPEC_TEXT, "abc", strict=True)
    ids = {}
    for name, (condition, last) in CHILDREN.items():
        tags = {"more.kind": "trial", "more.condition": condition, "more.seed": "0"}
        with TrialTracker.open(uri, launch.run_id, trial_key("c0ffee000001", name), tags, strict=True) as trial:
            report = trial.report_callback()
            report({"iter": 3.0, "val/seg/miou": last / 2}, None)
            report({"iter": 6.0, "val/seg/miou": last}, None)
        ids[name] = trial.run_id
    launch.finish()
    return launch.experiment_id, launch.run_id, ids


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


class UiProcess:
    """``python -m more ui`` as a subprocess in its own session; its output lines are collected by a thread."""

    def __init__(self, uri: str, port: int) -> None:
        # as from a user's shell: no tracking URI and no telemetry switches (`more` sets them itself)
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI" and k not in TELEMETRY_OFF}
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


def test_a_missing_chromium_skips_with_the_reason_fails_when_required_and_skipping_can_be_asked(monkeypatch,
                                                                                              tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without chromium
    for key in ("MORE_SKIP_BROWSER", "MORE_REQUIRE_BROWSER"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"needs Chromium, which is not on PATH: install it with "
                                                    r"`apt-get install -y chromium`"):
        require_chromium()
    monkeypatch.setenv("MORE_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="MORE_REQUIRE_BROWSER=1 requires the browser test"):
        require_chromium()
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert require_chromium() == str(fake)
    monkeypatch.setenv("MORE_SKIP_BROWSER", "1")
    with pytest.raises(pytest.skip.Exception, match="MORE_SKIP_BROWSER=1"):
        require_chromium()


def test_ui_refuses_a_non_loopback_host_without_allow_remote(capsys):
    assert main(["ui", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_the_runs_page_more_ui_links_to_lists_the_trials_with_the_metric_in_chromium(make_store):
    require_chromium()
    uri = make_store()
    experiment_id, parent_id, child_ids = tracked_store(uri)
    port = free_port()
    ui = UiProcess(uri, port)
    server_pid = None
    try:
        url, server_pid = ui.wait_for_url()
        assert url == f"http://127.0.0.1:{port}"
        server_env = environ_of(server_pid)  # the server telemetry off, from `more` alone (see UiProcess)
        assert {k: server_env.get(k) for k in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")} == \
            {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
        with urllib.request.urlopen(f"{url}/ajax-api/3.0/mlflow/ui-telemetry", timeout=30) as resp:
            assert json.load(resp)["disable_ui_telemetry"] is True  # what the UI's own telemetry asks the server

        # the runs page `more ui` links to, in the experiment's trials view (more/tracking/views.py)
        link = ui.wait_for(r"^  ui_spec: (http://\S+)$", 30).group(1)
        assert link == f"{url}/#/experiments/{experiment_id}/runs?viewStateShareKey=more-trials"
        shots = REPO / "work" / "test-artifacts"
        shots.mkdir(parents=True, exist_ok=True)
        shot = shots / "mlflow-ui-runs-page.png"
        shot.unlink(missing_ok=True)
        page = page_text(chromium(link, screenshot=shot))
        assert "3 matching runs" in page, page[:3000]  # the launch run and both trials
        assert "more: trials by val/seg/miou" in page  # the view's name, on the Views button
        assert "Sort: val/seg/miou" in page and "val/seg/miou" in page.split("Sort: val/seg/miou", 1)[1]
        # both trials are rows of their own (not nested under the collapsed launch run), best first, each with its
        # metric, condition and seed; the launch run, without the metric, comes last. The grid renders the pinned
        # name column before the other columns, so the names come in row order, then the rows' values.
        rows = sorted(((name, condition, last) for name, (condition, last) in CHILDREN.items()), key=lambda r: -r[2])
        names = [name for name, _, _ in rows] + ["ui_spec-c0ffee000001"]
        assert all(name in page for name in names), page[:3000]
        assert [page.index(name) for name in names] == sorted(page.index(name) for name in names), page[:3000]
        values = r" .*?".join(rf"{re.escape(str(last))} {re.escape(condition)} 0" for _, condition, last in rows)
        assert re.search(rf"{values} .*?- - -", page[page.index(names[-1]):]), page[:3000]
        assert "telemetry" not in page.lower()
        assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

        os.kill(ui.proc.pid, signal.SIGTERM)  # `more ui` stops its server's process group, then exits
        assert ui.proc.wait(timeout=60) == 0
        with pytest.raises(ProcessLookupError):
            os.killpg(server_pid, 0)
    finally:
        if ui.proc.poll() is None or server_pid is not None:
            ui.kill_leftovers(server_pid)
