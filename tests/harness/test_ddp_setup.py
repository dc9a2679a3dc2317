"""``resources.workers`` (several DDP processes per trial, chosen from the spec) and the rank-0 relay, no Ray."""

from __future__ import annotations

import pytest

from more.harness.spec import DDP_DRIVER_CPUS, Resources, SpecError, _resources, expand, parse_spec, spec_hash


def spec(resources=None) -> dict:
    data = {"name": "demo", "experiment": {"config": "synthetic", "overrides": {"train.max_iters": 10}},
            "conditions": {"more": {}}, "seeds": [0]}
    if resources is not None:
        data["resources"] = resources
    return data


@pytest.mark.parametrize("resources, workers, per_worker", [
    (None, 1, {"CPU": 1.0, "GPU": 0.0}),
    ({"gpus": 1}, 1, {"CPU": 1.0, "GPU": 1.0}),
    ({"gpus": 0.5}, 1, {"CPU": 1.0, "GPU": 0.5}),
    ({"gpus": 2}, 2, {"CPU": 1.0, "GPU": 1.0}),  # how one asks for 2 GPUs per trial: one process per GPU
    ({"gpus": 2, "cpus": 4}, 2, {"CPU": 4.0, "GPU": 1.0}),
    ({"gpus": 4}, 4, {"CPU": 1.0, "GPU": 1.0}),
    ({"gpus": 2, "workers": 1}, 1, {"CPU": 1.0, "GPU": 2.0}),  # one process holding two GPUs, as before
    ({"workers": 2, "cpus": 0.5}, 2, {"CPU": 0.5, "GPU": 0.0}),  # CPU processes (gloo)
])
def test_workers_default_to_one_per_gpu(resources, workers, per_worker):
    res = parse_spec(spec(resources)).resources
    assert res.workers == workers and res.per_worker() == per_worker
    if workers == 1:
        assert res.as_ray() == {"cpu": res.cpus, "gpu": res.gpus}  # today's single-process trial
    else:
        assert res.as_ray() == {"cpu": DDP_DRIVER_CPUS, "gpu": 0.0}  # the workers reserve through Ray Train


@pytest.mark.parametrize("resources, message", [
    ({"workers": 0}, "resources.workers=0: need an integer >= 1"),
    ({"workers": 1.5}, "resources.workers=1.5: need an integer >= 1"),
    ({"workers": True}, "resources.workers=True: need an integer >= 1"),
    ({"workers": "2"}, "resources.workers='2': need an integer >= 1"),
    ({"gpus": 2, "workers": 4}, "resources.gpus=2 with resources.workers=4: each worker trains on exactly one GPU"),
    ({"gpus": 4, "workers": 2}, "resources.gpus=4 with resources.workers=2: each worker trains on exactly one GPU; "
                                "need gpus: 2 (one per worker) or gpus: 0"),
    ({"gpus": 3, "workers": 2}, "resources.gpus=3 with resources.workers=2"),
    ({"gpus": 0.5, "workers": 2}, "resources.gpus=0.5 with resources.workers=2"),
    ({"gpus": 2.5}, "resources.gpus=2.5: need a fraction in [0, 1] or a whole number of GPUs"),
    ({"worker": 2}, "resources.worker: unknown key; did you mean 'workers'?"),
])
def test_bad_workers_name_the_key_and_value(resources, message):
    with pytest.raises(SpecError) as err:
        parse_spec(spec(resources))
    assert message in str(err.value)


def test_specs_without_workers_keep_their_hash_and_workers_change_it():
    def digest(resources):
        parsed = parse_spec(spec(resources))
        return spec_hash(parsed, expand(parsed))

    one = digest({"cpus": 1, "gpus": 1})
    assert digest({"cpus": 1, "gpus": 1, "workers": 1}) == one
    assert Resources(1.0, 1.0).hashed() == {"cpus": 1.0, "gpus": 1.0}  # what the hash held before `workers`
    assert digest({"cpus": 1, "gpus": 2, "workers": 2}) != digest({"cpus": 1, "gpus": 2, "workers": 1})


def test_only_ablation_specs_take_workers():
    def fail(msg: str) -> SpecError:
        return SpecError(msg)

    with pytest.raises(SpecError, match="resources.workers: unknown key"):
        _resources({"workers": 2}, fail)  # e.g. search specs: their trainable runs one process
    assert _resources({"gpus": 2}, fail).workers == 1


def test_dry_run_shows_the_workers():
    from more.harness.dry_run import dry_run_text

    parsed = parse_spec(spec({"cpus": 4, "gpus": 2}))
    text = dry_run_text(parsed, expand(parsed), "0123456789ab")
    assert "resources per trial: 2 DDP workers x (4 CPU, 1 GPU); max concurrent: unlimited" in text


def test_rank_zero_waits_for_tune_and_a_diverged_worker_stays_diverged():
    from ray.train import WorkerGroupError

    from more.harness.ddp import GO_ON, LOG, REPORT, STOP, RankZeroChannel, TrialStopped, _worker_error
    from more.train import TrainingDiverged

    class FakeQueue(list):
        def put(self, item):
            self.append(item)

        def get(self):
            return self.pop(0)

    items, acks = FakeQueue(), FakeQueue([GO_ON, STOP])
    channel = RankZeroChannel(items, acks)
    channel.log("hello")
    channel.report({"iter": 3.0}, "/ckpt/iter_000003")
    with pytest.raises(TrialStopped):
        channel.report({"iter": 6.0}, "/ckpt/iter_000006")
    assert items == [(LOG, "hello"), (REPORT, {"iter": 3.0}, "/ckpt/iter_000003"),
                     (REPORT, {"iter": 6.0}, "/ckpt/iter_000006")]

    diverged = TrainingDiverged("loss term 'mct' became non-finite at step 4")
    error = _worker_error(WorkerGroupError("boom", {0: diverged, 1: RuntimeError("peer lost")}))
    assert isinstance(error, TrainingDiverged) and str(error) == str(diverged)
    other = WorkerGroupError("boom", {1: RuntimeError("peer lost")})
    assert _worker_error(other) is other


def test_only_multi_worker_trials_carry_their_resources_to_the_adapter(tmp_path):
    from more.harness.tune_runner import WORKERS_KEY, ExperimentStore, trial_params

    store = ExperimentStore(str(tmp_path), "demo-0123456789ab")
    multi = {"cpus": 4.0, "gpus": 2.0, "workers": 2}
    for resources, expected in (({"gpus": 1}, None), ({"cpus": 4, "gpus": 2}, multi)):
        parsed = parse_spec(spec(resources))
        params = trial_params(parsed, expand(parsed)[0], store)
        assert params.get(WORKERS_KEY) == expected
        assert params["runtime.num_threads"] == int(parsed.resources.cpus)  # per process
