"""The preflight of an ablation launch: every input it will use, checked before Ray starts or a file is written.

:func:`launch_checks` looks at each trial's data root, labels file and weights (on this machine, or, with an
``--address``, later on a cluster node that can hold a trial: :func:`cluster_path_problems`), the experiment
storage, the tracking store, the Ray address or this machine's resources, and the GPUs a trial asks for against
the nodes it could ever run on (:mod:`more.harness.node_types`). Problems are collected, not raised, so a dry run can
print the trials and the plan first and then every failed check; a launch stops at the first one
(:meth:`Findings.raise_first`). :func:`same_config_problems` finds conditions (or sweep points) that resolve to the
same config, from the trials' identities.

Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from more.preflight import PreflightError

DEFAULT_STORAGE = "work/ray_results"
CLUSTER_CHECK_TIMEOUT_S = 60.0  # how long a path check waits for a node that can hold a trial (autoscaling)


def resolve_storage(storage: str) -> str:
    """A storage path made absolute (Tune needs it so); a URI (``s3://...``) as it is."""
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


@dataclass
class Findings:
    """What a preflight found: a line per passed check (``--dry-run`` prints them) and one per problem."""

    ok: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, fn: Callable[..., str | None], *args: Any, **kwargs: Any) -> str | None:
        """Run one check: its line (if any) goes to ``ok``, its :class:`PreflightError` to ``problems``; returns
        the line, or None when the check failed."""
        try:
            line = fn(*args, **kwargs)
        except PreflightError as exc:
            self.problem(str(exc))
            return None
        if line:
            self.ok.append(line)
        return line or ""

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def raise_first(self) -> None:
        """A launch stops at the first problem: one line, before anything starts."""
        if self.problems:
            raise PreflightError(self.problems[0])

    def text(self) -> str:
        return "".join(f"  ok  {line}\n" for line in self.ok) + "".join(f"  note  {n}\n" for n in self.notes)


def _positive(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise PreflightError(f"{flag} {value}: must be >= 1")


def trial_path_problems(spec: Any, trials: list[Any], *, where: str = "") -> tuple[list[str], list[str]]:
    """Each trial's data root, labels file and weights, checked on the machine this runs on. Returns the passed
    lines and the problems, each once with the trials it concerns (``where`` starts each line)."""
    from more.harness.spec import trial_config

    return _paths_checked([(t.name, trial_config(spec, t)) for t in trials], where)


def _paths_checked(configs: list[tuple[str, Any]], where: str) -> tuple[list[str], list[str]]:
    """:func:`more.preflight.config_paths` of each (trial name, config): the passed lines and the problems, each
    once with the trials it concerns."""
    from more.preflight import config_paths

    found: dict[str, list[str]] = {}
    bad: dict[str, list[str]] = {}
    for name, cfg in configs:
        try:
            found.setdefault(config_paths(cfg), []).append(name)
        except PreflightError as exc:
            bad.setdefault(str(exc), []).append(name)

    def named(text: str, names: list[str]) -> str:
        others = f" and {len(names) - 1} other{'s' if len(names) > 2 else ''}" if len(names) > 1 else ""
        return f"{where}{text} (trial {names[0]}{others})"

    return [named(t, n) for t, n in found.items()], [named(t, n) for t, n in bad.items()]


def launch_target(address: str | None, resources: Any, findings: Findings, *, dry_run: bool,
                  cpus: int | None = None) -> None:
    """The Ray to run on: a cluster that answers, or a local machine that can hold one trial (a dry run only notes
    a trial too big for this machine: the launch may go to a cluster)."""
    from more.preflight import local_resources, ray_address

    if findings.check(ray_address, address) is None or address is not None:
        return  # the cluster's own resources are checked right after connecting, before any trial is submitted
    try:
        findings.ok.append(local_resources(resources, cpus=cpus))
    except PreflightError as exc:
        if not dry_run:
            findings.problem(str(exc))
        else:
            findings.notes.append(f"{exc} (a dry run only notes this: pass --address to launch on a cluster)")


def tracking_check(uri: str | None, tracking: bool, findings: Findings) -> None:
    from more.preflight import tracking_uri

    if not tracking:
        findings.ok.append("tracking: off (--no-tracking)")
    else:
        findings.check(lambda: tracking_uri(uri)[1])


def launch_checks(spec: Any, trials: list[Any], *, storage: str, tracking_uri: str | None, tracking: bool,
                  address: str | None, max_concurrent: int | None, dry_run: bool,
                  cluster_config: str | None = None) -> Findings:
    """Everything an ablation launch will touch (see the module docstring); nothing is raised."""
    from more.harness.node_types import gpu_fit_line
    from more.preflight import output_dir

    findings = Findings()
    findings.check(_positive, max_concurrent, "--max-concurrent")
    if address is None:
        ok, problems = trial_path_problems(spec, trials)
        findings.ok.extend(ok)
        for text in problems:
            findings.problem(text)
    else:
        findings.ok.append("data roots and weights: checked on a cluster node that can hold a trial, once connected")
    _device_problems(spec, trials, findings)
    findings.ok.append(f"{len(trials)} trial configs valid")
    if "://" in storage:
        findings.ok.append(f"--storage {storage} (a URI: checked by Ray when the experiment starts)")
    else:
        findings.check(output_dir, resolve_storage(storage), "--storage")
    tracking_check(tracking_uri, tracking, findings)
    launch_target(address, spec.resources, findings, dry_run=dry_run)
    if address is None:  # with --address: against the cluster's nodes, once connected (cluster_checks)
        findings.check(gpu_fit_line, spec.resources, local=True, cluster_config=cluster_config)
    return findings


def _device_problems(spec: Any, trials: list[Any], findings: Findings) -> None:
    """Each trial's ``runtime.device`` against the GPUs it reserves (a CUDA device in a trial without one)."""
    from more.harness.spec import trial_config
    from more.input_checks import DataInputError, trial_device

    for trial in trials:
        try:
            trial_device(trial_config(spec, trial), spec.resources, f"trial '{trial.name}': ")
        except DataInputError as exc:
            findings.problem(str(exc))


def same_config_problems(trials: list[Any], identities: dict[str, Any]) -> list[str]:
    """Trials of different conditions or sweep points whose configs are the same (the same content key): the spec
    would train one thing twice and show it as two rows."""
    by_key: dict[str, list[Any]] = {}
    for trial in trials:
        ident = identities.get(trial.name)
        if ident is not None:
            by_key.setdefault(ident.key, []).append(trial)
    out = []
    for group in by_key.values():
        if len(group) < 2:
            continue
        rows = [(t.condition, " ".join(f"{k}={v}" for k, v in t.sweep.items())) for t in group]
        names = [f"condition '{c}'" + (f", sweep point {p}" if p else "") for c, p in rows]
        out.append(f"{names[0]} and {names[1]} resolve to the same config (trials {group[0].name} and "
                   f"{group[1].name}, content key {identities[group[0].name].key}): they would train the same thing "
                   f"twice as two rows; remove one or make them differ")
    return out


# ------------------------------------------------------------------------------------------ on the cluster


def _paths_on_node(configs: list[tuple[str, Any]]) -> tuple[list[str], list[str]]:
    """Runs as a Ray task on a node that can hold a trial: the passed lines and the problems, naming the node."""
    import ray

    return _paths_checked(configs, f"on node {ray.util.get_node_ip_address()}: ")


def cluster_checks(spec: Any, trials: list[Any], *, cluster_config: str | None = None,
                   timeout_s: float = CLUSTER_CHECK_TIMEOUT_S) -> Findings:
    """Right after connecting to a cluster (``--address``), before any trial is submitted: the GPUs a trial asks for
    against the cluster's nodes and its config's node types, then the paths where the trials will run."""
    import ray

    from more.harness.node_types import gpu_fit_line

    findings = Findings()
    if findings.check(gpu_fit_line, spec.resources, local=False, live_nodes=ray.nodes(),
                      cluster_config=cluster_config) is None:
        return findings  # no node can take the path check's task either
    on_nodes = cluster_path_problems(spec, trials, timeout_s=timeout_s)
    findings.ok += on_nodes.ok
    findings.notes += on_nodes.notes
    for text in on_nodes.problems:
        findings.problem(text)
    return findings


def cluster_path_problems(spec: Any, trials: list[Any], *, timeout_s: float = CLUSTER_CHECK_TIMEOUT_S) -> Findings:
    """The trials' data roots, labels files and weights, checked by a small Ray task that reserves what one trial
    (or one DDP worker) reserves, so it runs on a node of the kind the trials will run on; the driver's machine may
    not have the data at all. When no node takes the task within ``timeout_s`` (an autoscaler still adding GPU
    nodes), a note says the paths were not checked."""
    import ray

    from more.harness.spec import trial_config

    findings = Findings()
    res = spec.resources
    need = res.per_worker() if res.workers > 1 else {"CPU": res.cpus, "GPU": res.gpus}
    remote = ray.remote(num_cpus=need["CPU"], num_gpus=need["GPU"], max_retries=0)(_paths_on_node)
    ref = remote.remote([(t.name, trial_config(spec, t)) for t in trials])
    done, _ = ray.wait([ref], timeout=timeout_s)
    if not done:
        ray.cancel(ref, force=True)
        findings.notes.append(f"data roots and weights not checked on the cluster: no node took a task of "
                              f"{need['CPU']:g} CPU and {need['GPU']:g} GPU within {timeout_s:g} s")
        return findings
    ok, problems = ray.get(ref)
    findings.ok.extend(ok)
    for text in problems:
        findings.problem(text)
    return findings
