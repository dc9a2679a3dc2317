"""How many GPUs the nodes a trial could run on can have: this machine, and the node types of a Ray cluster config.

A trial (or each DDP worker) runs on one node, so the GPUs it reserves must fit one node; a DDP trial's workers
together must fit the cluster at its largest. The node types come from a cluster config (``cluster.yaml``:
``available_node_types.<type>.resources.GPU`` when declared, else the GPU count of its AWS instance type, from
:data:`AWS_GPUS`; how many of each: 1 for the head, else the type's ``max_workers`` capped by the cluster's). Without
a cluster config, the bound is :data:`MAX_GPUS_PER_NODE`, the most GPUs one machine has.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from more.preflight import PreflightError

CLUSTER_FILE = "cluster.yaml"
MAX_GPUS_PER_NODE = 16  # the largest single machines (e.g. HGX-2 / DGX-2 class) hold 16 GPUs
# GPUs per AWS instance type, for the GPU families (from AWS's instance type pages). Any other g*/p* type is unknown;
# other families (m, c, r, t, inf, trn, ...) have none.
_ONE = ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")
AWS_GPUS: dict[str, int] = {
    **{f"{fam}.{size}": 1 for fam in ("g4dn", "g5", "g6", "g6e") for size in _ONE},
    **{f"{fam}.{size}": 4 for fam in ("g5", "g6", "g6e") for size in ("12xlarge", "24xlarge")},
    **{f"{fam}.48xlarge": 8 for fam in ("g5", "g6", "g6e")},
    "g4dn.12xlarge": 4, "g4dn.metal": 8,
    "p3.2xlarge": 1, "p3.8xlarge": 4, "p3.16xlarge": 8, "p3dn.24xlarge": 8,
    "p4d.24xlarge": 8, "p4de.24xlarge": 8, "p5.48xlarge": 8, "p5e.48xlarge": 8, "p5en.48xlarge": 8,
}


@dataclass(frozen=True)
class NodeType:
    """One node type of a cluster config: its name, instance type, GPUs (None: unknown) and how many such nodes the
    cluster can have at most."""

    name: str
    instance: str
    gpus: int | None
    max_count: int = 1

    def text(self) -> str:
        count = "unknown GPUs" if self.gpus is None else f"{self.gpus} GPU"
        return f"{self.name} ({self.instance}: {count})" if self.instance else f"{self.name} ({count})"


def find_cluster_config(explicit: str | None = None) -> Path | None:
    """``explicit``, else ``cluster.yaml`` in the working directory, else in the checkout holding this package."""
    if explicit:
        return Path(explicit).expanduser()
    for folder in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (folder / CLUSTER_FILE).is_file():
            return folder / CLUSTER_FILE
    return None


def _instance_gpus(instance: str) -> int | None:
    if instance in AWS_GPUS:
        return AWS_GPUS[instance]
    family = instance.split(".", 1)[0]
    return None if family[:1] in ("g", "p") else 0


def node_types(path: Path) -> list[NodeType]:
    """The node types of a Ray cluster config ([] when it has none or cannot be read)."""
    from more.yamlio import YamlError, load_yaml

    try:
        data = load_yaml(path.read_text(), where=str(path))
    except (OSError, YamlError):
        return []
    if not isinstance(data, dict):
        return []
    types = data.get("available_node_types") or {}
    cluster_max = data.get("max_workers") if isinstance(data.get("max_workers"), int) else None
    out = []
    for name, body in types.items():
        body = body if isinstance(body, dict) else {}
        declared = (body.get("resources") or {}).get("GPU")
        node_config = body.get("node_config") or {}
        instance = str(node_config.get("InstanceType") or node_config.get("machineType") or "")
        gpus = int(declared) if isinstance(declared, (int, float)) else _instance_gpus(instance) if instance else None
        if name == data.get("head_node_type"):
            count = 1
        else:
            own = body.get("max_workers") if isinstance(body.get("max_workers"), int) else None
            count = min(x for x in (own, cluster_max, 10**6) if x is not None)
        out.append(NodeType(str(name), instance, gpus, count))
    return out


def gpus_per_node_needed(resources: Any) -> float:
    """The GPUs one node must hold: the trial's (one process), or one DDP worker's."""
    return resources.gpus if resources.workers == 1 else resources.gpus_per_worker


def gpu_fit_line(resources: Any, *, local: bool, live_nodes: list[dict[str, Any]] | None = None,
                 cluster_config: str | None = None) -> str:
    """The line saying which node can hold a trial's GPUs; :class:`PreflightError` when no node ever can.

    Args:
        resources: :class:`more.harness.spec.Resources`.
        local: the launch runs on this machine (no ``--address``): its GPUs count as a node.
        live_nodes: ``ray.nodes()`` of the connected cluster (``--address``), whose alive nodes count.
        cluster_config: the Ray cluster config whose node types count (default: ``cluster.yaml`` found by
            :func:`find_cluster_config`); an autoscaler may add nodes of these types.
    """
    need = gpus_per_node_needed(resources)
    if need <= 0:
        return "GPUs: none asked for"
    what = f"a trial needs {need:g} GPU on one node" if resources.workers == 1 else \
        f"each of {resources.workers} DDP workers needs {need:g} GPU on its node"
    compared = []
    if local:
        from more.preflight import local_gpus

        have = local_gpus()
        if have >= need:
            return f"GPUs: {what}; this machine has {have}"
        compared.append(f"this machine: {have} GPU")
    if live_nodes is not None:
        alive = [n for n in live_nodes if n.get("Alive")]
        best = max((float(n.get("Resources", {}).get("GPU", 0.0)) for n in alive), default=0.0)
        if best >= need:
            return f"GPUs: {what}; a node of the cluster has {best:g}"
        compared.append(f"the cluster's {len(alive)} nodes: at most {best:g} GPU")
    path = find_cluster_config(cluster_config)
    types = node_types(path) if path is not None and path.is_file() else []
    if types:
        fits = [t for t in types if t.gpus is None or t.gpus >= need]
        if fits and resources.workers > 1 and all(t.gpus is not None for t in types):
            total = sum(t.max_count * (int(t.gpus // need) if t.gpus else 0) for t in types)
            if total < resources.workers:
                raise PreflightError(
                    f"resources.gpus={resources.gpus:g}: {resources.workers} DDP workers of {need:g} GPU each, more "
                    f"than the cluster of {path} can ever hold ({total}: " + ", ".join(
                        f"{t.text()} x {t.max_count}" for t in types) + "); lower 'resources' in the spec (or pass "
                    "--cluster-config with the node types of your cluster)")
        if fits:
            return f"GPUs: {what}; node type {fits[0].text()} of {path} can hold it"
        compared.append(f"node types of {path}: " + ", ".join(t.text() for t in types))
    elif need <= MAX_GPUS_PER_NODE:
        return f"GPUs: {what} (no cluster config with node types found; machines have up to {MAX_GPUS_PER_NODE})"
    else:
        where = f"at {path}" if path is not None else f"in {os.getcwd()} or the checkout"
        compared.append(f"no machine has more than {MAX_GPUS_PER_NODE} (no cluster config with node types {where})")
    raise PreflightError(f"resources.gpus={resources.gpus:g}: {what}, more than any node can have ("
                         + "; ".join(compared) + "); lower 'resources' in the spec (or pass --cluster-config with "
                         "the node types of your cluster)")
