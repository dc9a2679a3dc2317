"""What a launch would do, without launching: the trials, the GPU-hour estimate, the reuse plan and every check.

:func:`dry_run` works before the data is there (a researcher plans a grid on a laptop, then launches where the data
lives): the trials, the estimate and the plan come first, then the checks that failed, and :attr:`DryRun.code` is 2
when one did. With an ``address``, the data roots and weights are checked on a node of the cluster that can hold a
trial (:func:`more.harness.checks.cluster_checks`), not on this machine. Nothing is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from more.harness.checks import DEFAULT_STORAGE, Findings, launch_checks, resolve_storage, same_config_problems
from more.harness.launcher import LaunchOptions, make_plan
from more.harness.reuse import WAIT, Decision, plan_text
from more.harness.spec import AblationSpec, Trial, expand, load_spec, spec_hash


@dataclass
class DryRun:
    """A dry run's findings: ``text`` (trials, estimate, passed checks, plan) and ``problems`` (one line each)."""

    spec: AblationSpec
    trials: list[Trial]
    spec_hash: str
    decisions: list[Decision]
    findings: Findings
    text: str

    @property
    def problems(self) -> list[str]:
        return self.findings.problems

    @property
    def code(self) -> int:
        return 2 if self.problems else 0


def dry_run(spec: AblationSpec | str | Path, *, storage: str = DEFAULT_STORAGE, tracking_uri: str | None = None,
            address: str | None = None, options: LaunchOptions | None = None) -> DryRun:
    """The dry run of a launch with the same arguments as :func:`more.harness.launch` (see the module docstring).

    Raises:
        SpecError, ConfigError: the spec or a trial's config is invalid (nothing can be planned then).
    """
    opts = options or LaunchOptions()
    if not isinstance(spec, AblationSpec):
        spec = load_spec(spec)
    trials = expand(spec)
    digest = spec_hash(spec, trials)
    storage = resolve_storage(storage)
    findings = launch_checks(spec, trials, storage=storage, tracking_uri=tracking_uri, tracking=opts.tracking,
                             address=address, max_concurrent=opts.max_concurrent, dry_run=True,
                             cluster_config=opts.cluster_config)
    if address is not None and not findings.problems:
        _check_on_cluster(spec, trials, address, opts, findings)
    decisions, identities = make_plan(spec, trials, digest, storage=storage, tracking_uri=tracking_uri,
                                      options=opts)
    for text in same_config_problems(trials, identities):
        findings.problem(text)
    decisions = _mark_claimed(decisions, identities, storage)
    text = dry_run_text(spec, trials, digest, checks=findings.text(), plan=plan_text(decisions))
    return DryRun(spec, trials, digest, decisions, findings, text)


def _check_on_cluster(spec: AblationSpec, trials: list[Trial], address: str, opts: LaunchOptions,
                      findings: Findings) -> None:
    """Join the cluster for the node checks (no trial is submitted), then leave it."""
    from more.harness.checks import cluster_checks
    from more.harness.local_ray import ray_runtime

    with ray_runtime(address):
        found = cluster_checks(spec, trials, cluster_config=opts.cluster_config)
    findings.ok += found.ok
    findings.notes += found.notes
    for text in found.problems:
        findings.problem(text)


def _mark_claimed(decisions: list[Decision], identities: dict[str, Any], storage: str) -> list[Decision]:
    """Trials to run that a live launch has claimed: a launch would wait for them (read only: nothing is claimed)."""
    from more.harness.claims import ClaimSet, owner_text, supported
    from more.harness.reuse import CONTINUE, RUN

    if not supported(storage):
        return decisions
    probe = ClaimSet(storage, experiment="dry run")
    out = []
    for d in decisions:
        owner = probe.holder(identities[d.trial].key) if d.action in (RUN, CONTINUE) else None
        out.append(Decision(d.trial, WAIT, None, f"being trained by another launch, {owner_text(owner)}: a launch "
                                                 f"would wait for it") if owner else d)
    return out


def dry_run_text(spec: AblationSpec, trials: list[Trial], digest: str, *, checks: str = "", plan: str = "") -> str:
    """The trial table (name, condition, overrides, seed), the count, the GPU-hour estimate, what the preflight
    checked (``checks``) and what a launch would reuse and run (``plan``)."""
    header = [
        f"spec {spec.name} (hash {digest}): {spec.source}",
        "experiment overrides: " + (overrides_text(spec.overrides) or "-"),
        f"metric {spec.metric} ({spec.mode}); resources per trial: {resources_text(spec)}; "
        f"max concurrent: {spec.max_concurrent or 'unlimited'}; "
        f"max failures: {spec.max_failures}",
        f"global batch (processes x train.batch_size x train.accum_steps): {_global_batch_text(spec, trials)}",
        "",
    ]
    rows = [("trial", "condition", "overrides", "seed")]
    for t in trials:
        rows.append((t.name, t.condition, overrides_text({**spec.conditions[t.condition], **t.sweep}) or "-",
                     str(t.seed)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    table = [" | ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    table.insert(1, "-+-".join("-" * w for w in widths))
    if spec.gpu_hours_per_trial is not None:
        estimate = f"{len(trials) * spec.gpu_hours_per_trial:g} GPU-hours ({spec.gpu_hours_per_trial:g} per trial)"
    elif spec.resources.gpus == 0:
        estimate = "0 GPU-hours (CPU-only trials)"
    else:
        estimate = "unknown (set gpu_hours_per_trial in the spec)"
    checked = ["preflight:", checks.rstrip("\n")] if checks else []
    footer = ["", f"{len(trials)} trials; estimated {estimate}", *checked]
    return "\n".join(header + table + footer) + "\n" + (f"\n{plan}\n\n" if plan else "") + "dry run: nothing launched\n"


def _global_batch_text(spec: AblationSpec, trials: list[Trial]) -> str:
    from more.config.batch import global_batches_text
    from more.harness.spec import trial_config

    return global_batches_text([trial_config(spec, t) for t in trials], spec.resources.workers)


def resources_text(spec: AblationSpec) -> str:
    res = spec.resources
    if res.workers == 1:
        return f"{res.cpus:g} CPU, {res.gpus:g} GPU"
    return f"{res.workers} DDP workers x ({res.cpus:g} CPU, {res.gpus_per_worker:g} GPU)"


def overrides_text(overrides: dict) -> str:
    """``key=value`` pairs with values spelled as in YAML (``false``, ``[1.0, 0.5]``)."""
    return " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items())
