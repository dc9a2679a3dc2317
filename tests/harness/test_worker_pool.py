"""``WorkerPool``, ``Losses`` and ``start_failure`` (more.harness.infer_fanout): when a network worker may start, which
one is released for the CRF, how losses are counted and which failure is an error to stop on, on hand-made cluster
totals, a hand-moved clock and Ray's exception classes (no Ray running)."""

from __future__ import annotations

import itertools

from more.harness.infer_fanout import Losses, WorkerPool, start_failure


class Cluster:
    """Totals that a test changes (a node lost), handles numbered in start order, and the handles killed."""

    def __init__(self, **totals: float) -> None:
        self.totals, self.killed, self.reads = totals, [], 0
        self._ids = itertools.count(1)

    def resources(self) -> dict[str, float]:
        self.reads += 1
        return dict(self.totals)

    def pool(self, size: int, *, gpus: bool = False, check_s: float = 0.0) -> WorkerPool:
        return WorkerPool(lambda: next(self._ids), size, gpus=gpus, kill=self.killed.append,
                          resources=self.resources, check_s=check_s)


def test_a_worker_starts_only_where_it_leaves_a_cpu_to_the_crf_unless_it_is_the_only_one():
    cluster = Cluster(CPU=3)
    pool = cluster.pool(3)
    assert [pool.ready(a) for a in range(3)] == [True, True, False]  # 3 CPUs: 2 workers and 1 CPU for the CRF
    assert pool.actors == [1, 2, None] and pool.spare() == (1, 0)
    lone = Cluster(CPU=1).pool(2)
    assert [lone.ready(a) for a in range(2)] == [True, False]  # the only worker takes the only CPU


def test_the_first_workers_all_start_however_full_the_cluster_and_idle_ones_then_make_room():
    cluster = Cluster(CPU=2)
    pool = cluster.pool(3)
    pool.start_all()  # what the user asked for: Ray queues the one with no CPU
    assert pool.actors == [1, 2, 3] and pool.spare() == (-1, 0)
    pool.busy[:] = [1, 1, 0]
    assert pool.make_room() is True and cluster.killed == [3]
    pool.busy[:] = [1, 0, 0]
    assert pool.make_room() is True and cluster.killed == [3, 2] and pool.spare() == (1, 0)
    assert pool.make_room() is False


def test_gpu_workers_need_a_free_gpu_each():
    pool = Cluster(CPU=8, GPU=1).pool(2, gpus=True)
    assert [pool.ready(a) for a in range(2)] == [True, False]
    assert pool.spare() == (7, 0)
    assert Cluster(CPU=8).pool(1, gpus=True).ready(0) is False  # no GPU left in the cluster


def test_a_lost_node_that_leaves_the_workers_every_cpu_releases_an_idle_one_once():
    cluster = Cluster(CPU=4)
    pool = cluster.pool(2)
    assert pool.ready(0) and pool.ready(1)
    pool.busy[:] = [1, 0]
    assert pool.make_room() is False  # 4 CPUs: 2 workers leave 2 to the CRF
    cluster.totals["CPU"] = 2  # a node of 2 CPUs lost
    assert pool.make_room() is True
    assert cluster.killed == [2] and pool.actors == [1, None] and pool.generation == [0, 1] and pool.busy == [1, 0]
    assert pool.make_room() is False  # one CPU is free now
    assert pool.ready(1) is False  # and a new worker in slot 2 would take it


def test_no_worker_is_released_while_all_of_them_run_a_call():
    cluster = Cluster(CPU=2)
    pool = cluster.pool(2)
    assert pool.ready(0) and not pool.ready(1)
    cluster.totals["CPU"] = 1
    pool.busy[0] = 2
    assert pool.make_room() is False and cluster.killed == []
    pool.busy[0] = 0
    assert pool.make_room() is True and cluster.killed == [1] and pool.live() == 0


def test_a_dropped_slot_starts_a_new_worker_and_release_all_ends_every_live_one():
    cluster = Cluster(CPU=4)
    pool = cluster.pool(3)
    assert all(pool.ready(a) for a in range(2))
    pool.busy[0] = 2
    pool.drop(0)  # lost: its calls in flight are stale from now on
    assert pool.actors == [None, 2, None] and pool.busy[0] == 0 and pool.generation[0] == 1
    assert pool.ready(0) and pool.actors[0] == 3
    pool.release_all()
    assert cluster.killed == [1, 3, 2]  # the lost one, then slot 1's and slot 2's
    assert pool.live() == 0 and pool.generation == [2, 1, 1]


def test_the_cluster_is_read_at_most_every_check_s():
    cluster = Cluster(CPU=4)
    pool = cluster.pool(2, check_s=3600)
    pool.ready(0)
    pool.ready(1)
    cluster.totals["CPU"] = 1
    assert pool.make_room() is False and cluster.reads == 1  # the cached totals still say 4 CPUs
    assert cluster.pool(1, check_s=0).spare() == (1, 0)


def test_losses_within_the_window_of_an_events_first_are_that_event():
    now = [0.0]
    losses = Losses(2, window_s=60, clock=lambda: now[0])
    steps = []
    for t in (0, 3, 20, 60, 60.5, 100, 121, 130, 200):  # a node's death in steps, then two more failures
        now[0] = t
        steps.append((losses.add(), losses.events, losses.over))
    assert steps == [(True, 1, False), (False, 1, False), (False, 1, False), (False, 1, False),  # 0..60: one event
                     (True, 2, False), (False, 2, False),  # 60.5 opens the second (fixed window, not sliding)
                     (True, 3, True), (False, 3, True), (True, 4, True)]


def test_a_worker_that_keeps_dying_opens_a_new_event_every_window():
    now = [0.0]
    losses = Losses(3, window_s=60, clock=lambda: now[0])
    for t in range(0, 1000, 5):  # every 5 s, for good
        now[0] = t
        losses.add()
        if losses.over:
            break
    assert losses.events == 4 and now[0] == 195  # events open at 0, 65, 130 and 195 s


def test_a_worker_whose_init_raised_is_an_error_to_stop_on_and_a_lost_one_is_not():
    from ray.exceptions import ActorDiedError, RayTaskError, WorkerCrashedError

    trace = ("Traceback (most recent call last):\n  File \"more/harness/infer_fanout.py\", in __init__\n"
             "FileNotFoundError: no dataset at /data/VOC2012 on this node\n")
    raised = RayTaskError("NetWorker.__init__", trace, FileNotFoundError("no dataset at /data/VOC2012 on this node"))
    assert start_failure(ActorDiedError(raised)) == "FileNotFoundError: no dataset at /data/VOC2012 on this node"
    assert start_failure(ActorDiedError()) is None  # died with its process or node: a loss
    assert start_failure(WorkerCrashedError()) is None
    assert start_failure(raised) is None  # an error inside a call: raised as it is
