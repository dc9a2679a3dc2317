"""Launch an ablation spec: the library behind ``python -m more ablate``, for a notebook or a script as well::

    from more.harness import LaunchOptions, launch

    result = launch("ablations/table3_synthetic.yaml", storage="work/ray_results",
                    options=LaunchOptions(max_concurrent=2))
    print(result.code, result.experiment, [(r.trial, r.status, r.metric) for r in result.rows])

One launch, in order: the spec is loaded and expanded; every input is checked (:mod:`more.harness.checks`; the
first problem raises :class:`~more.preflight.PreflightError`); the experiment folder is checked against the spec
hash (resume rules); each trial gets a reuse decision (:mod:`more.harness.growth`) and trials of different rows
with the same config are refused; the trials to train are claimed, and those another live launch holds are left
to it (:mod:`more.harness.claims`); Ray is started (or the cluster at ``address`` joined and checked), the spec and
the plan are written, Tune runs the trials with ``trainer`` (the real one by default); the claimed trials are waited
for; the :data:`FINALIZERS` and ``finalizers`` run; outcomes are recorded, the results published, and the MLflow
runs closed and linked (:mod:`more.harness.publish`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from more.harness.checks import DEFAULT_STORAGE, launch_checks, resolve_storage, same_config_problems
from more.harness.reuse import WAIT, Decision, plan_text
from more.harness.spec import AblationSpec, Trial, expand, load_spec, spec_hash
from more.preflight import PreflightError

Say = Callable[[str], None]


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _stdout(text: str) -> None:
    print(text, flush=True)


class LaunchRefused(PreflightError):
    """The launch cannot start as asked (a changed spec to resume, nothing to resume, no node for a trial)."""


@dataclass
class LaunchOptions:
    """How to launch; the defaults are those of ``python -m more ablate SPEC``.

    Attributes:
        resume: continue an interrupted experiment of this spec (its unfinished and failed trials).
        max_concurrent: at most this many trials at once (overrides the spec's ``max_concurrent``).
        dashboard: start the Ray dashboard (local Ray only).
        tracking: track the trials in MLflow.
        rerun: run every trial, ignoring earlier results with the same content key.
        across_commits: also reuse results of other code versions.
        retry_failed: run trials that failed before again (False keeps them failed).
        cluster_config: the Ray cluster config whose node types the GPU check compares against (default:
            ``cluster.yaml`` in the working directory or the checkout).
        claim_poll_s: how often to look whether trials another launch trains have ended.
    """

    resume: bool = False
    max_concurrent: int | None = None
    dashboard: bool = False
    tracking: bool = True
    rerun: bool = False
    across_commits: bool = False
    retry_failed: bool = True
    cluster_config: str | None = None
    claim_poll_s: float = 10.0


@dataclass
class LaunchResult:
    """What a launch did.

    Attributes:
        code: 0 when every trial of the spec finished, 1 when some failed or did not finish.
        experiment: the experiment folder (``<storage>/<spec name>-<spec hash>``).
        spec_hash: the spec's hash.
        rows: the results table, one row per trial in spec order (reused rows carry their ``origin``).
        decisions: the reuse plan (what ran, what was reused, continued or waited for).
        parent_run_id: the MLflow parent run (None when untracked).
        runs_page: the line naming the MLflow runs page ("" when untracked).
    """

    code: int
    experiment: str
    spec_hash: str
    rows: list[Any] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    parent_run_id: str | None = None
    runs_page: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0


@dataclass
class AfterTune:
    """What a finalizer receives: the launch once Tune has the final state of its trials, before outcomes are
    recorded and the results published.

    Attributes:
        tracker: the launch's :class:`~more.tracking.LaunchTracker` (None when untracked).
        trial_runs: the launch's MLflow trial runs as just listed ([] when untracked).
    """

    spec: AblationSpec
    spec_hash: str
    store: Any
    trials: list[Trial]
    rows: list[Any]
    decisions: list[Decision]
    identities: dict[str, Any]
    tracker: Any
    trial_runs: list[Any]


Finalizer = Callable[[AfterTune], None]
# Run by every launch after Tune (and after waiting for trials other launches trained), before the outcomes are
# recorded and the results published: the place for driver-side reconciliation, e.g. filling in MLflow the
# evaluations a trial's run folder holds but its run missed. Append a function; `finalizers=` adds per launch.
FINALIZERS: list[Finalizer] = []


def launch(spec: AblationSpec | str | Path, *, storage: str = DEFAULT_STORAGE, tracking_uri: str | None = None,
           address: str | None = None, options: LaunchOptions | None = None, trainer: Callable[..., Any] | None = None,
           finalizers: Sequence[Finalizer] = (), say: Say = _stdout, warn: Say = _stderr) -> LaunchResult:
    """Run the trials of an ablation spec as Ray Tune trials, reusing what already ran (see the module docstring).

    Args:
        spec: a parsed spec or the path of one.
        storage: the experiment storage, a path (made absolute) or a URI such as ``s3://bucket/ray``.
        tracking_uri: the MLflow store (a sqlite path or URL, or ``http://server``; default:
            ``$MLFLOW_TRACKING_URI``, else ``work/mlflow/mlflow.db``).
        address: ``HOST:PORT`` of a running Ray cluster, or ``auto`` on one of its nodes (None: a private Ray on
            127.0.0.2).
        options: see :class:`LaunchOptions`.
        trainer: called in each trial instead of :func:`more.train.train` (same keyword arguments: ``report``,
            ``resume``, ``run_dir``, ``log``); a light one lets a benchmark time the harness alone.
        finalizers: run after Tune, before publishing, besides :data:`FINALIZERS`.
        say, warn: where progress lines and warnings go (default: stdout and stderr).

    Raises:
        PreflightError: bad input (including :class:`LaunchRefused`), before Ray starts or anything is written.
        SpecError, ConfigError: the spec or a trial's config is invalid.
    """
    opts = options or LaunchOptions()
    if not isinstance(spec, AblationSpec):
        spec = load_spec(spec)
    trials = expand(spec)
    if trainer is not None and spec.resources.workers > 1:
        raise PreflightError("a custom trainer runs single-process trials only (resources.workers is "
                             f"{spec.resources.workers})")
    storage = resolve_storage(storage)
    launch_checks(spec, trials, storage=storage, tracking_uri=tracking_uri, tracking=opts.tracking, address=address,
                  max_concurrent=opts.max_concurrent, dry_run=False, cluster_config=opts.cluster_config).raise_first()
    run = _Launch(spec, trials, spec_hash(spec, trials), storage, tracking_uri, address, opts, trainer,
                  [*FINALIZERS, *finalizers], say, warn)
    return run.start()


def make_plan(spec: AblationSpec, trials: list[Trial], digest: str, *, storage: str, tracking_uri: str | None,
              options: LaunchOptions) -> tuple[list[Decision], dict[str, Any]]:
    """The reuse decisions and the trials' identities (:func:`more.harness.growth.make_plan`)."""
    from more.harness.growth import make_plan as growth_plan

    return growth_plan(spec, trials, storage=storage, experiment=f"{spec.name}-{digest}", tracking_uri=tracking_uri,
                       tracking=options.tracking, rerun=options.rerun, across_commits=options.across_commits,
                       retry_failed=options.retry_failed)


@dataclass
class _Launch:
    """One launch's state while it runs (see :func:`launch`)."""

    spec: AblationSpec
    trials: list[Trial]
    digest: str
    storage: str
    tracking_uri: str | None
    address: str | None
    opts: LaunchOptions
    trainer: Callable[..., Any] | None
    finalizers: list[Finalizer]
    say: Say
    warn: Say
    tracker: Any = None

    def start(self) -> LaunchResult:
        from more.harness.growth import load_plan
        from more.harness.tune_runner import ExperimentStore, can_restore

        self.store = ExperimentStore(self.storage, f"{self.spec.name}-{self.digest}")
        stored = (self.store.read_text("spec_hash") or "").strip()
        if stored and stored != self.digest:
            raise LaunchRefused(f"refusing: {self.store.path} holds spec hash {stored}, but the spec now hashes to "
                                f"{self.digest}")
        others = [(n, (self.store.read_text("spec_hash", name=n) or "").strip())
                  for n in self.store.siblings(f"{self.spec.name}-")]
        others = [(n, h) for n, h in others if h]
        exists = can_restore(self.store)
        if self.opts.resume:
            if not exists:
                if others:
                    old = ", ".join(f"{h} ({n})" for n, h in others)
                    raise LaunchRefused(f"refusing to resume: spec '{self.spec.name}' changed since its first "
                                        f"launch: stored hash {old}, current hash {self.digest}. Restore the old spec "
                                        f"to resume it, or run without --resume to start a new experiment.")
                raise LaunchRefused(f"nothing to resume: no experiment at {self.store.path}; run without --resume")
            if self.opts.max_concurrent is not None:
                self.say("note: --max-concurrent is ignored with --resume (the experiment keeps its original setting)")
            self.decisions, self.identities = load_plan(self.store)
            self.fresh = False
        elif exists:
            return self._report_existing()
        else:
            for name, h in others:
                self.say(f"note: {self.store.storage}/{name} holds an earlier version of this spec (hash {h}); "
                         f"starting a new experiment {self.store.name}")
            self.decisions, self.identities = make_plan(self.spec, self.trials, self.digest, storage=self.storage,
                                                        tracking_uri=self.tracking_uri, options=self.opts)
            same = same_config_problems(self.trials, self.identities)
            if same:
                raise PreflightError(same[0])
            self.fresh = True
        return self._claim_and_run()

    # ------------------------------------------------------------------------------------------- the steps

    def _report_existing(self) -> LaunchResult:
        from more.harness.growth import all_rows, load_plan
        from more.harness.publish import publish
        from more.harness.results import FAILED, FINISHED

        decisions, identities = load_plan(self.store)
        rows = all_rows(self.spec, self.trials, self.store, decisions, identities)
        unfinished = [r for r in rows if r.status not in (FINISHED, FAILED)]
        if unfinished:
            raise LaunchRefused(f"{self.store.path} exists with {len(unfinished)} unfinished trials (the driver "
                                f"stopped early); pass --resume to continue it")
        self.say(f"nothing to do: experiment {self.store.name} (spec hash {self.digest}) already ran all "
                 f"{len(rows)} trials in {self.store.path}")
        if self.opts.tracking and self.store.is_local:  # what an outage at the end of the launch left behind
            from more.tracking import reconcile

            reconciled = reconcile(self.tracking_uri, self.store.path, same_store=True)
            for line in filter(None, [reconciled.text(), reconciled.elsewhere_text().rstrip()]):
                self.say(line)
        code = publish(self.spec, self.digest, self.store, rows, say=self.say, warn=self.warn)
        return LaunchResult(code, self.store.path, self.digest, rows, decisions)

    def _claim_and_run(self) -> LaunchResult:
        from more.harness.claims import ClaimSet, owner_text, supported, wait_released
        from more.harness.growth import launched

        todo = launched(self.trials, self.decisions)
        if self.fresh:
            self.say(plan_text(self.decisions))
        claims = ClaimSet(self.store.storage, experiment=self.store.name) if supported(self.store.storage) else None
        if claims is None:
            self.warn(f"note: no trial claims on {self.store.storage} (an object store has no exclusive create): two "
                      f"launches sharing trials there may both train them")
        with claims or contextlib.nullcontext():
            held = self._claim(claims, todo)
            for name, owner in held.items():
                self.warn(f"{name}: being trained by another launch, {owner_text(owner)}; this launch trains the "
                          f"others, then waits for it and reports its result")
            todo = [t for t in todo if t.name not in held]
            waiting = {self.identities[d.trial].key: d.trial for d in self.decisions if d.action == WAIT}
            if todo:
                self._train(todo)
            else:
                self._write_experiment()
                self.say(f"all {len(self.trials)} trials reused" + (" or trained by another launch" if waiting
                                                                    else "") + ": no Ray started")
                self.tracker = self._launch_tracker()
            if waiting and claims is not None:
                wait_released(claims, waiting, poll_s=self.opts.claim_poll_s, say=self.say)
                self._collect_waited()
        return self._finish()

    def _claim(self, claims: Any, todo: list[Trial]) -> dict[str, dict[str, Any]]:
        """Claim the trials to train; those another live launch holds are marked waited for (and returned)."""
        from more.harness.growth import mark_waiting, save_plan

        if claims is None:
            return {}
        held = {}
        for t in todo:
            ident = self.identities.get(t.name)
            if ident is not None and (owner := claims.claim(ident.key, t.name)) is not None:
                held[t.name] = owner
        self.decisions = mark_waiting(self.decisions, held)
        if held and not self.fresh:
            save_plan(self.store, self.decisions, self.identities)
        return held

    def _write_experiment(self) -> None:
        """The spec, its trials, its hash and the plan in the experiment folder (a new experiment only)."""
        from more.harness.growth import save_plan

        if not self.fresh:
            return
        self.store.write_text("spec.yaml", self.spec.path.read_text() if self.spec.path else "")
        self.store.write_text("trials.json", _json([asdict(t) for t in self.trials]))
        self.store.write_text("spec_hash", self.digest + "\n")
        save_plan(self.store, self.decisions, self.identities)

    def _train(self, todo: list[Trial]) -> None:
        """Start (or join) Ray, check the nodes, write the experiment, run Tune (new or restored)."""
        from more.harness.checks import cluster_checks
        from more.harness.growth import tune_extras
        from more.harness.local_ray import ray_runtime
        from more.harness.tune_runner import build_tuner, restore_tuner
        from more.preflight import cluster_refusal

        with ray_runtime(self.address, dashboard=self.opts.dashboard) as runtime:
            import ray

            where = f"local Ray on {runtime.address}" if runtime.embedded else f"Ray cluster at {runtime.address}"
            self.say(f"{'resuming' if self.opts.resume else 'running'} {len(todo)} trials of {self.spec.name} on "
                     f"{where}; experiment {self.store.path}")
            if runtime.dashboard_url:
                self.say(f"Ray dashboard: http://{runtime.dashboard_url}")
            self.say("nodes: " + ", ".join(_node_text(n) for n in ray.nodes() if n.get("Alive")))
            problem = cluster_refusal(self.spec.resources, embedded=runtime.embedded)
            if problem:
                raise LaunchRefused(problem)
            if not runtime.embedded:
                found = cluster_checks(self.spec, todo, cluster_config=self.opts.cluster_config)
                for note in found.notes:
                    self.warn(f"note: {note}")
                found.raise_first()
            self._write_experiment()
            self.tracker = self._launch_tracker()
            tracking = None
            if self.tracker is not None and self.tracker.enabled:
                self.say(f"tracking in MLflow: {self.tracker.tracking_uri} (experiment {self.spec.name}, parent run "
                         f"{self.tracker.run_id})")
                tracking = {"uri": self.tracker.tracking_uri, "parent": self.tracker.run_id,
                            "spec_name": self.spec.name, "spec_hash": self.digest,
                            "log_checkpoint": bool((self.spec.tracking or {}).get("log_checkpoint"))}
            _pickle_by_value(self.trainer)
            if self.opts.resume:
                tuner = restore_tuner(self.spec, self.store, trainer=self.trainer)
            else:
                tuner = build_tuner(self.spec, todo, self.store, max_concurrent=self.opts.max_concurrent,
                                    tracking=tracking, extras=tune_extras(self.decisions, self.identities),
                                    trainer=self.trainer)
            tuner.fit()

    def _collect_waited(self) -> None:
        """The results the other launches left for the trials this one waited for (:func:`collect_waited`)."""
        from more.harness.growth import collect_waited, save_plan

        self.decisions = collect_waited(self.decisions, self.identities, storage=self.storage,
                                        tracking_uri=self.tracking_uri, tracking=self.opts.tracking,
                                        experiment=self.store.name)
        save_plan(self.store, self.decisions, self.identities)

    def _finish(self) -> LaunchResult:
        """Finalizers, then outcomes, the published table and the MLflow runs closed and linked."""
        from more.harness.growth import all_rows, write_outcomes
        from more.harness.publish import close_tracking, publish

        rows = all_rows(self.spec, self.trials, self.store, self.decisions, self.identities)
        tracked = self.tracker is not None and self.tracker.enabled
        if tracked and self.store.is_local:  # what trials could not send (outages), caught up from their run folders
            from more.tracking import reconcile

            reconciled = reconcile(self.tracker.tracking_uri, self.store.path).text()
            if reconciled:
                self.say(reconciled)
        runs = self.tracker.listed_trial_runs() if tracked else []
        context = AfterTune(self.spec, self.digest, self.store, self.trials, rows, self.decisions, self.identities,
                            self.tracker, runs)
        for finalizer in self.finalizers:
            finalizer(context)
        write_outcomes(rows, run_ids={r.info.run_name: r.info.run_id for r in runs}, spec=self.spec,
                       identities=self.identities, storage=self.storage)
        code = publish(self.spec, self.digest, self.store, rows, say=self.say, warn=self.warn)
        page = close_tracking(self.tracker, self.spec, self.digest, rows, self.decisions, self.identities, runs, code,
                              say=self.say)
        if page:
            self.say(page)
        return LaunchResult(code, self.store.path, self.digest, rows, self.decisions,
                            self.tracker.run_id if tracked else None, page)

    def _launch_tracker(self) -> Any:
        """The MLflow parent run of this spec hash (reused on --resume), or None without tracking."""
        if not self.opts.tracking:
            return None
        from more.provenance import git_sha
        from more.tracking import LaunchTracker

        text = self.spec.path.read_text() if self.spec.path else ""
        return LaunchTracker.start(self.tracking_uri, self.spec.name, self.digest, text, git_sha(),
                                   experiment_name=(self.spec.tracking or {}).get("experiment"))


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=1) + "\n"


def _node_text(node: dict) -> str:
    res = node.get("Resources", {})
    return f"{node['NodeManagerAddress']} ({res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU)"


def _pickle_by_value(trainer: Callable[..., Any] | None) -> None:
    """A trainer defined in a script, notebook or test module travels to Ray's workers by value (they cannot import
    that module); the project's functions and installed libraries travel by reference."""
    fn = getattr(trainer, "func", trainer)  # a functools.partial: its function
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    if fn is None or module is None or module.__name__ == "__main__" or module.__name__.startswith("more."):
        return
    where = str(getattr(module, "__file__", "") or "")
    if not where or where.startswith((sys.prefix, sys.base_prefix)):
        return  # an installed library (or a built-in): importable on every node
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(module)
