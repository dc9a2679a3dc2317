"""preflight.cluster_refusal: what ablate and training searches do right after connecting to Ray."""

from __future__ import annotations

import pytest

from more.harness.spec import Resources
from more.preflight import cluster_refusal

NODES = [{"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0}}, {"Alive": False, "Resources": {"CPU": 64.0}}]


@pytest.fixture
def nodes(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "nodes", lambda: NODES)


def test_a_trial_that_fits_is_not_refused(nodes, capsys):
    assert cluster_refusal(Resources(cpus=2, gpus=1), embedded=True) == ""
    assert capsys.readouterr().err == ""


def test_local_ray_refuses_a_trial_no_alive_node_holds(nodes, capsys):
    text = cluster_refusal(Resources(cpus=8, gpus=0), embedded=True)
    assert text == ("no node can hold a trial of 8 CPU and 0 GPU (nodes: 4 CPU / 1 GPU); lower 'resources' in the "
                    "spec or run on a cluster with --address")
    assert capsys.readouterr().err == ""


def test_a_cluster_only_warns_since_its_autoscaler_may_add_nodes(nodes, capsys):
    assert cluster_refusal(Resources(cpus=8, gpus=0), embedded=False) == ""
    assert capsys.readouterr().err == ("warning: no node can hold a trial of 8 CPU and 0 GPU (nodes: 4 CPU / 1 GPU); "
                                       "waiting for the cluster's autoscaler\n")
