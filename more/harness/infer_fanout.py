"""``infer`` fanned out over Ray: the network pass on one worker per GPU, DenseCRF on every CPU of every node.

The pieces are the pure functions of :mod:`more.eval.infer_work` and :mod:`more.eval.infer_items`; this module only
places them. Network workers are Ray actors (one GPU each, or one CPU each on machines without GPUs) that restore
the model from weights the driver puts into the object store once (no shared disk needed for the checkpoint; the
dataset must be at ``data.root`` on every node, as for training). Each batch call returns the images' encoded files
and confusion counts to the driver, and each image's CRF input as its own object, which goes straight to a one-CPU
CRF task wherever Ray has a free core. The driver alone writes files and the completion record
(:class:`more.eval.infer_store.InferStore`), so a run killed anywhere resumes as the in-process one does, and the
batches are the same fixed grid, so the outputs are the same as in-process on the same kind of device.

Without ``--address`` the embedded Ray of :mod:`more.harness.local_ray` (loopback, token auth) is started with the
machine's GPUs and as many CPUs as the network workers and ``--workers`` CRF tasks need.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import ray

from more.eval.infer import InferProgress, InferResult, Log, crf_kwargs, log_stderr, result_of
from more.eval.infer_items import CrfDone, run_crf
from more.eval.infer_job import InferPlan
from more.eval.infer_store import InferStore, batch_grid

CALLS_PER_WORKER = 2  # batches queued on each network worker: the next one is decoded while one runs
STALL_S = 300.0  # how long a run with work left waits while nothing can run (every node gone)
STALL_ENV = "MORE_INFER_STALL_S"  # overrides STALL_S (an autoscaling cluster may want to wait longer)
LOSS_EVENT_S = 60.0  # losses within this long of an event's first are that event (one node's death, in steps)
# what a lost process or node raises for a call (never a user error inside the call, which is a RayTaskError)
LOST = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
        ray.exceptions.ObjectLostError, ray.exceptions.LocalRayletDiedError)


class WorkersLost(RuntimeError):
    """More network workers or CRF inputs were lost than one run replaces, or a network worker could not start; the
    finished images are kept."""


def restart_budget(net_workers: int) -> int:
    """How many lost network workers one run replaces before it gives up (a node flapping forever is not retried
    forever): two per worker, at least three."""
    return max(3, 2 * net_workers)


class Losses:
    """A run's losses counted as events: the losses within ``window_s`` of an event's first loss belong to it. A
    node's death reaches the driver in steps (its network worker's call fails; a replacement that Ray placed there
    before marking the node dead fails too; the CRF inputs the node held are lost), which must not use up a budget
    meant for separate failures. The window is fixed from the event's first loss, so a worker that keeps dying
    still opens a new event every ``window_s``.
    """

    def __init__(self, budget: int, *, window_s: float = LOSS_EVENT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.budget, self.window_s, self._clock = budget, window_s, clock
        self.events = 0
        self._started: float | None = None

    def add(self) -> bool:
        """Count one loss; True when it opens a new event."""
        now = self._clock()
        if self._started is not None and now - self._started <= self.window_s:
            return False
        self.events, self._started = self.events + 1, now
        return True

    @property
    def over(self) -> bool:
        """More events than the budget."""
        return self.events > self.budget


@dataclass
class FanOut:
    """Where the fan-out runs, resolved after connecting.

    Attributes:
        net_workers: network workers (actors).
        gpus: True when each network worker holds a GPU.
        crf_slots: CPUs the CRF tasks may use at once.
        address: the Ray GCS address.
    """

    net_workers: int
    gpus: bool
    crf_slots: int
    address: str

    @property
    def device_type(self) -> str:
        return "cuda" if self.gpus else "cpu"

    def describe(self) -> str:
        where = f"{self.net_workers} {'GPU' if self.gpus else 'CPU'} network worker(s)"
        return f"{where} and {self.crf_slots} CRF slot(s) on Ray at {self.address}"


@contextmanager
def fanout_runtime(address: str | None, *, net_workers: int = 0, crf_workers: int = 0, device: str = "auto",
                   log: Log = log_stderr) -> Iterator[FanOut]:
    """Connect to the cluster at ``address`` (or start the embedded Ray) and size the fan-out.

    Args:
        address: ``HOST:PORT`` of a running cluster, or None for an embedded Ray on loopback.
        net_workers: network workers; 0 = one per GPU (of the cluster, or of this machine), 1 without GPUs.
        crf_workers: CRF tasks at once; 0 = every CPU the network workers leave free (at least one).
        device: ``runtime.device``: ``cpu`` keeps the network off the GPUs.
    """
    from more.harness.local_ray import ray_runtime
    from more.preflight import PreflightError, local_gpus

    want_gpus = device != "cpu"
    if address is None:
        gpus = local_gpus() if want_gpus else 0
        if gpus and net_workers > gpus:
            raise PreflightError(f"--net-workers {net_workers}: this machine has {gpus} GPU(s), one per network "
                                 f"worker")
        workers = net_workers or max(gpus, 1)
        crf = crf_workers or max(1, (os.cpu_count() or 1) - workers)  # every network worker holds one CPU
        kwargs: dict[str, Any] = {"num_cpus": workers + crf, "num_gpus": gpus}
    else:
        kwargs = {}
    with ray_runtime(address, **kwargs) as runtime:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if want_gpus else 0
        workers = net_workers or max(gpus, 1)
        use_gpus = gpus > 0
        if use_gpus and workers > gpus:
            raise PreflightError(f"--net-workers {workers}: the cluster has {gpus} GPU(s), one per network worker")
        cpus = int(resources.get("CPU", 1))
        crf = crf_workers or max(1, cpus - workers)
        fan = FanOut(net_workers=workers, gpus=use_gpus, crf_slots=crf, address=runtime.address or str(address))
        log(f"infer fan-out: {fan.describe()}")
        if cpus - workers < 1:
            log(f"infer fan-out: note: the cluster has {cpus} CPU(s) and each network worker holds one; idle "
                f"workers are released while CRF tasks wait for a CPU")
        yield fan


@ray.remote
class NetWorker:
    """One network worker: the model on its device and the split's dataset, one batch per call."""

    def __init__(self, cfg: Any, state: dict[str, Any], iteration: int, checkpoint: str, split: str, options: Any,
                 gpu: bool) -> None:
        import torch

        from more.data import build_eval_dataset
        from more.eval.infer import LoadedRun
        from more.model import build_model
        from more.train.trainer import use_autocast

        if not gpu:
            torch.set_num_threads(cfg.runtime.num_threads or 1)  # one CPU per worker, as Ray reserved
        device = torch.device("cuda" if gpu else "cpu")
        model = build_model(cfg, load_weights=False)
        model.load_state_dict(state)
        model.to(device).eval()
        self.run = LoadedRun(cfg=cfg, model=model, checkpoint=checkpoint, iteration=iteration, device=device,
                             autocast=use_autocast(cfg, device))
        self.dataset = build_eval_dataset(cfg, split)
        self.options = options

    def batch(self, indices: list[int], write: list[str], crf: list[str]) -> Any:
        """``net_batch`` of the images at ``indices``; returns the works, then each CRF job as its own object."""
        from more.data import collate_eval
        from more.eval.infer_work import net_batch

        batch = collate_eval([self.dataset[i] for i in indices])
        works = net_batch(self.run, batch, self.options, maps=self.options.maps, write=set(write), crf=set(crf))
        jobs = []
        for work in works:
            if work.crf is not None:
                jobs.append(work.crf)
                work.crf = None
        return (works, *jobs) if jobs else works


@ray.remote(num_cpus=1)
def crf_task(job: Any, task: str, kwargs: dict[str, float], k: int) -> CrfDone:
    """One image's DenseCRF on one CPU."""
    return run_crf(job, task, kwargs, k)


def start_failure(exc: BaseException) -> str | None:
    """The last line of the error a network worker's ``__init__`` raised (its traceback's ``Type: message``), or
    None when ``exc`` is not that (a lost process or node, or an error inside a call)."""
    if not (isinstance(exc, ray.exceptions.RayActorError) and getattr(exc, "actor_init_failed", False)):
        return None
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:500] if lines else type(exc).__name__


def _cause(exc: BaseException) -> BaseException:
    """The worker's own exception inside Ray's wrapper (so a user error stays one line)."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.as_instanceof_cause()
        return cause if isinstance(cause, BaseException) else exc
    return exc


class WorkerPool:
    """The network workers of one run, one slot each: all started at first, replaced after a loss when the cluster has
    room, released when the CRF tasks need their CPUs.

    Room: a network worker holds one CPU (and one GPU with ``gpus``); a replacement starts only where it leaves a CPU
    for the CRF (or as the only worker). When the CRF tasks wait and the workers hold every CPU of the live cluster
    (a lost node shrank it, or the workers fill it), idle workers are released one at a time. The cluster's resources
    are read at most every ``check_s`` seconds.

    Args:
        start: starts one worker (an actor handle).
        size: slots.
        gpus: each worker holds a GPU.
        kill: ends a worker (``ray.kill``).
        resources: the live cluster's totals (``ray.cluster_resources``).
    """

    def __init__(self, start: Callable[[], Any], size: int, *, gpus: bool, kill: Callable[[Any], None] = ray.kill,
                 resources: Callable[[], dict[str, float]] = ray.cluster_resources, check_s: float = 2.0) -> None:
        self._start, self._kill, self._resources, self.gpus, self.check_s = start, kill, resources, gpus, check_s
        self.actors: list[Any] = [None] * size
        self.generation = [0] * size  # bumped when a worker is replaced or released: its calls in flight are stale
        self.busy = [0] * size  # calls in flight
        self._read_at, self._total = -float("inf"), {}

    def live(self) -> int:
        return sum(actor is not None for actor in self.actors)

    def cpus(self) -> float:
        """CPUs of the live cluster (held by the workers or not)."""
        return self.spare()[0] + self.live()

    def spare(self) -> tuple[float, float]:
        """CPUs and GPUs of the live cluster that no network worker holds."""
        now = time.monotonic()
        if now - self._read_at >= self.check_s:
            self._total, self._read_at = dict(self._resources()), now
        live = self.live()
        return self._total.get("CPU", 0.0) - live, self._total.get("GPU", 0.0) - (live if self.gpus else 0)

    def ready(self, a: int) -> bool:
        """Slot ``a`` has a worker, started now if the cluster has room for it."""
        if self.actors[a] is not None:
            return True
        cpus, gpus = self.spare()
        if cpus >= (2 if self.live() else 1) and (gpus >= 1 or not self.gpus):
            self.actors[a] = self._start()
            return True
        return False

    def start_all(self) -> None:
        """A worker in every empty slot, room or not (the run's first workers, as sized by :func:`fanout_runtime`)."""
        for a, actor in enumerate(self.actors):
            if actor is None:
                self.actors[a] = self._start()

    def drop(self, a: int) -> None:
        """End slot ``a``'s worker (lost or released); the slot starts a new one when it has work and room."""
        if self.actors[a] is not None:
            self._kill(self.actors[a])
        self.actors[a], self.busy[a] = None, 0
        self.generation[a] += 1

    def make_room(self) -> bool:
        """Release an idle worker when the workers hold every CPU of the live cluster (the CRF tasks waiting then
        have none); True when one was released."""
        if self.spare()[0] >= 1:
            return False
        idle = [a for a, actor in enumerate(self.actors) if actor is not None and self.busy[a] == 0]
        if idle:
            self.drop(idle[-1])
            return True
        return False

    def release_all(self) -> None:
        for a in range(len(self.actors)):
            self.drop(a)


def run_fanout(plan: InferPlan, fan: FanOut, *, log: Log = log_stderr) -> InferResult:
    """Run a checked plan on the Ray the fan-out is connected to; resumes from what ``plan.out`` records.

    Returns:
        :class:`InferResult` over every recorded image.
    """
    from more.config import num_classes

    cfg, options = plan.cfg, plan.options
    names = list(plan.dataset.names)
    k = num_classes(cfg) + 1
    store = InferStore(plan.out, options.outputs, k)
    finished_before = store.finished(names)
    todo = deque(store.pending(batch_grid(len(names), cfg.eval.batch_size), names))
    store.on_record = InferProgress(store.counts, len(names), desc=f"infer {options.task}", outputs=options.outputs,
                                    log=log)
    log(f"infer {options.task}: {len(names)} images"
        + (f", {finished_before} finished before" if finished_before else "") + f" -> {plan.out}")
    state = ray.put({name: tensor.detach().cpu() for name, tensor in plan.run.model.state_dict().items()})
    # a GPU worker runs its two queued batches on two threads: one decodes images while the other's forward runs
    worker = NetWorker.options(num_cpus=1, num_gpus=1 if fan.gpus else 0, max_restarts=0,
                               max_concurrency=CALLS_PER_WORKER if fan.gpus else 1)

    def start_worker() -> Any:
        return worker.remote(cfg, state, plan.run.iteration, str(plan.run.checkpoint), plan.split, options, fan.gpus)

    pool = WorkerPool(start_worker, fan.net_workers, gpus=fan.gpus)
    pool.start_all()  # as many as asked for: Ray queues (or an autoscaler adds nodes for) those with no room yet
    kwargs = crf_kwargs(cfg)
    net: dict[Any, tuple[int, int, tuple[int, ...]]] = {}  # first return of a batch call -> (actor, generation, batch)
    crf: dict[Any, tuple[int, ...]] = {}  # CRF task -> its batch
    crf_cap = 2 * fan.crf_slots  # CRF inputs in flight: bounds the object store's memory
    requeued: set[tuple[int, ...]] = set()  # batches put back after a loss and not dispatched again yet
    losses = Losses(restart_budget(fan.net_workers))
    logged: set[tuple[int, str]] = set()  # (event, kind of loss) already logged: one line each
    finished = False
    stalled_since: float | None = None  # work left and nothing can run: none in flight, or no CPU left in the cluster
    stall_s = float(os.environ.get(STALL_ENV) or STALL_S)

    def put_back(batch: tuple[int, ...], exc: BaseException, what: str | None) -> None:
        """A call lost with its process or node: its batch runs again (what it recorded stays recorded). ``what``
        names a new loss (counted as an event, logged once per event and kind); None is a call that failed with a
        loss already counted."""
        if what is not None:
            new = losses.add()
            if losses.over:
                raise WorkersLost(f"infer: {losses.events} losses of a network worker or CRF input in this run (more "
                                  f"than {losses.budget}; losses within {losses.window_s:g} s count as one), the "
                                  f"last by {type(exc).__name__}: {' '.join(str(exc).split())[:300]}; the finished "
                                  f"images are kept in {plan.out}: run the same command again to continue") from None
            kind = "a CRF task's input" if what.startswith("a CRF") else what
            if (losses.events, kind) not in logged:
                logged.add((losses.events, kind))
                count = (f"{losses.events} of {losses.budget} losses one run replaces" if new else
                         f"part of loss {losses.events}: within {losses.window_s:g} s of it")
                log(f"infer: {what} lost ({type(exc).__name__}); its batches run again ({count})")
        if batch not in requeued:
            requeued.add(batch)
            todo.appendleft(list(batch))

    try:
        while todo or net or crf:
            for a in range(len(pool.actors)):
                while todo and pool.busy[a] < CALLS_PER_WORKER and len(crf) < crf_cap and pool.ready(a):
                    indices = todo.popleft()
                    batch = tuple(indices)
                    requeued.discard(batch)
                    first, second = store.missing(names[i] for i in indices)
                    if not (first or second):  # a batch put back after a loss that has everything by now
                        continue
                    batch_names = [names[i] for i in indices]
                    crf_names = [n for n in batch_names if n in second] if options.crf else []
                    refs = pool.actors[a].batch.options(num_returns=1 + len(crf_names)).remote(
                        indices, sorted(first), crf_names)
                    refs = refs if isinstance(refs, list) else [refs]
                    net[refs[0]] = (a, pool.generation[a], batch)
                    pool.busy[a] += 1
                    for job in refs[1:]:
                        crf[crf_task.remote(job, options.task, kwargs, k)] = batch
            if not todo and not net and pool.live():
                # the network pass is done: its workers' CPUs (GPUs) go to the CRF tasks left and to other jobs
                pool.release_all()
                if crf:
                    log(f"infer: network pass done, its workers released; {len(crf)} CRF task(s) left")
            elif crf and pool.make_room():
                log(f"infer: a network worker released: the live cluster's CPUs were all held by network workers "
                    f"and {len(crf)} CRF task(s) waited")
            waiting = [*net, *crf]
            if not waiting or pool.cpus() < 1:  # no room for a network worker, or no CPU for anything in flight
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > stall_s:
                    cpus, gpus = pool.spare()
                    raise WorkersLost(f"infer: nothing could run for {stall_s:g} s (the live cluster has {cpus:g} "
                                      f"CPU(s) and {gpus:g} GPU(s) free, {len(todo)} batch(es) and {len(crf)} CRF "
                                      f"task(s) left); the finished images are kept in {plan.out}: run the same "
                                      f"command again once nodes are back")
                if not waiting:
                    time.sleep(0.5)
                    continue
            else:
                stalled_since = None
            ready, _ = ray.wait(waiting, num_returns=1, timeout=1.0)
            if ready:
                rest = [r for r in waiting if r not in set(ready)]
                more_ready, _ = ray.wait(rest, num_returns=len(rest), timeout=0) if rest else ([], [])
                ready = [*ready, *more_ready]
            for ref in ready:
                if ref in net:
                    a, gen, batch = net.pop(ref)
                    current = gen == pool.generation[a]
                    if current:
                        pool.busy[a] -= 1
                    try:
                        value = ray.get(ref)
                    except LOST as exc:
                        if (why := start_failure(exc)) is not None:  # an error to stop on, not a loss
                            raise WorkersLost(f"infer: a network worker could not start: {why}; the finished images "
                                              f"are kept in {plan.out}: run the same command again once it is "
                                              f"fixed") from None
                        if current:  # the first of its calls to fail: the slot starts a new worker where Ray has room
                            pool.drop(a)
                        put_back(batch, exc, f"network worker {a + 1}" if current else None)
                        continue
                    except ray.exceptions.RayError as exc:
                        raise _cause(exc) from None
                    store.submit_net(value)
                else:
                    batch = crf.pop(ref)
                    try:
                        value = ray.get(ref)
                    except LOST as exc:  # its input went with a network worker (counted there) or its node
                        actor_gone = isinstance(exc, ray.exceptions.RayActorError)
                        put_back(batch, exc, None if actor_gone else "a CRF task's input")
                        continue
                    except ray.exceptions.RayError as exc:
                        raise _cause(exc) from None
                    store.submit_crf([value])
            store.raise_error()
        finished = True
    finally:
        pool.release_all()
        store.close(discard=not finished)
    return result_of(store, names, finished_before)
