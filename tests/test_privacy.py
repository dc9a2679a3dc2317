"""Telemetry is off by default (more/privacy.py): the switches, a real process that uses MLflow with every outgoing
name lookup and connection watched, and the cluster file's node commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from more.privacy import OPT_IN, TELEMETRY_OFF, disable_telemetry, telemetry_env

REPO = Path(__file__).resolve().parents[1]
# Variables that make MLflow believe it runs in CI or under pytest (it then keeps telemetry off by itself): a process
# that must show what `more` does is started without them.
CI_MARKERS = ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI", "GITLAB_CI", "JENKINS_URL", "TRAVIS",
              "TF_BUILD", "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE", "TEAMCITY_VERSION",
              "CLOUD_RUN_EXECUTION", "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME", "RUNBOT_WORKER_ID")


def test_disable_telemetry_sets_each_switch_that_is_not_set_and_keeps_the_users_own():
    env = {"RAY_USAGE_STATS_ENABLED": "1", "PATH": "/bin"}  # this user opted in to Ray's usage stats
    added = disable_telemetry(env)
    assert added == {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "HF_HUB_DISABLE_TELEMETRY": "1"}
    assert env == {**added, "RAY_USAGE_STATS_ENABLED": "1", "PATH": "/bin"}
    assert disable_telemetry(env) == {}
    assert telemetry_env({}) == TELEMETRY_OFF
    assert telemetry_env({"DO_NOT_TRACK": "false"})["DO_NOT_TRACK"] == "false"


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_more_telemetry_opts_in_to_everything(value):
    env = {OPT_IN: value}
    assert disable_telemetry(env) == {} and env == {OPT_IN: value}
    assert telemetry_env(env) == {}


def test_more_telemetry_other_values_keep_it_off():
    for value in ("", "0", "false", "no"):
        assert telemetry_env({OPT_IN: value}) == TELEMETRY_OFF


# Run in a fresh interpreter: every name lookup and connection to a non-loopback address is refused and recorded,
# then MLflow is used the way the harness uses it (experiment, run, metrics) and its telemetry has time to start.
PROBE = textwrap.dedent("""
    import ipaddress, json, socket, sys, time

    attempts = []

    def loopback(host):
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return host == "localhost"

    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if not loopback(host):
            attempts.append(str(host))
            raise socket.gaierror(socket.EAI_NONAME, "refused by the test")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock, address):
        if isinstance(address, tuple) and not loopback(address[0]):
            attempts.append(str(address[0]))
            raise ConnectionRefusedError("refused by the test")
        return real_connect(sock, address)

    socket.getaddrinfo, socket.socket.connect = getaddrinfo, connect

    uri = sys.argv[2]
    if sys.argv[1] == "more":
        from more.tracking.store import make_client
        client = make_client(uri)
    else:
        from mlflow import MlflowClient
        client = MlflowClient(uri)
    exp = client.create_experiment("probe")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "val/seg/miou", 1.0)
    client.set_terminated(run.info.run_id)
    from mlflow.telemetry import get_telemetry_client
    deadline = time.monotonic() + 5
    while not attempts and get_telemetry_client() is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    print(json.dumps({"client": get_telemetry_client() is not None, "attempts": attempts}))
""")


def probe(how: str, store: Path, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, how, f"sqlite:///{store}"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_process_using_more_sends_no_mlflow_telemetry_while_plain_mlflow_tries_to(template_db, tmp_path):
    results = {}
    for how in ("more", "plain"):
        store, config = tmp_path / f"{how}.db", tmp_path / f"{how}-config"
        store.write_bytes(template_db.read_bytes())  # a migrated store: no 15 s of migrations per process
        env = {k: v for k, v in os.environ.items() if k not in (*CI_MARKERS, *TELEMETRY_OFF, OPT_IN)}
        env["XDG_CONFIG_HOME"] = str(config)  # where MLflow keeps its telemetry installation id
        results[how] = {**probe(how, store, env), "id file": (config / "mlflow" / "telemetry.json").is_file()}

    assert results["more"] == {"client": False, "attempts": [], "id file": False}
    # the control: MLflow alone, in the same environment, writes its installation id and looks up its telemetry
    # server (the probe refuses it; MLflow then drops its client), so the check above can fail
    plain = results["plain"]
    assert plain["id file"] and any("mlflow-telemetry" in host for host in plain["attempts"]), plain


def test_a_notebook_that_imported_mlflow_first_loses_its_telemetry_client_when_more_opens_a_client(tmp_path):
    code = textwrap.dedent("""
        import os
        os.environ["_MLFLOW_TELEMETRY_LOGGING"] = "false"
        import mlflow  # before more: MLflow sets up telemetry from an environment without the switches (the client
        # makes no request until it records an event, and none is recorded here)
        from mlflow.telemetry import get_telemetry_client
        before = get_telemetry_client() is not None
        from more.tracking.store import make_client  # `import more` sets the switches
        make_client(os.environ["STORE"])
        print(before, get_telemetry_client() is not None)
    """)
    env = {k: v for k, v in os.environ.items() if k not in (*CI_MARKERS, *TELEMETRY_OFF, OPT_IN)}
    env.update(STORE=f"sqlite:///{tmp_path / 'mlflow.db'}", XDG_CONFIG_HOME=str(tmp_path / "config"))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["True", "False"]


def test_cluster_nodes_start_with_telemetry_off():
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    setup = "\n".join(config["setup_commands"])
    exports = [line for line in setup.splitlines() if "export" in line and "MLFLOW_DISABLE_TELEMETRY" in line]
    assert exports, "cluster.yaml: no setup command exports the telemetry switches into ~/.bashrc"
    for key, value in TELEMETRY_OFF.items():
        assert f"{key}={value}" in exports[0], key
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("--disable-usage-stats" in c for c in starts)
    server = next(c for c in config["head_start_ray_commands"] if "mlflow server" in c)
    assert "MLFLOW_DISABLE_TELEMETRY=true" in server and "DO_NOT_TRACK=true" in server
