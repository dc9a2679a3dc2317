"""How a spec becomes Tune settings and per-trial adapter dicts (checked without starting Ray)."""

from __future__ import annotations

from types import SimpleNamespace

from more.harness.spec import expand, parse_spec
from more.harness.tune_runner import (
    NAME_KEY,
    PARAM_KEY,
    RUN_DIR_KEY,
    SOURCE_KEY,
    ExperimentStore,
    ThresholdStopper,
    asha_max_t,
    trial_dirname,
    trial_params,
    tuner_setup,
)


def spec_with(**changes):
    data = {"name": "x", "experiment": {"config": "synthetic", "overrides": {"train.max_iters": 40}},
            "conditions": {"a": {}, "b": {"gcr.enabled": False, "train.max_iters": 60}}, "seeds": [0, 1]}
    data.update(changes)
    spec = parse_spec(data)
    return spec, expand(spec)


def test_tune_settings_follow_the_spec(tmp_path):
    spec, trials = spec_with(scheduler={"type": "asha", "grace_period": 5}, stop={"iter": 30, "val/seg/miou": 60},
                             max_concurrent=3, checkpoints={"keep": 4}, max_failures=2,
                             resources={"cpus": 2, "gpus": 0.5})
    store = ExperimentStore(str(tmp_path), "x-0123456789ab")
    setup = tuner_setup(spec, trials, store)
    tc, rc = setup.tune_config, setup.run_config
    assert (tc.metric, tc.mode, tc.max_concurrent_trials, tc.reuse_actors) == ("val/seg/miou", "max", 3, True)
    assert asha_max_t(spec, trials) == 60  # the longest trial (condition b)
    assert type(tc.scheduler).__name__ == "AsyncHyperBandScheduler"
    assert (rc.name, rc.storage_path) == ("x-0123456789ab", str(tmp_path))
    assert rc.checkpoint_config.num_to_keep == 4 and rc.failure_config.max_failures == 2
    assert isinstance(rc.stop, ThresholdStopper) and rc.stop.thresholds == {"iter": 30.0, "val/seg/miou": 60.0}
    assert not rc.sync_config.sync_artifacts  # local storage: the trainer writes into the trial folder itself
    grid = setup.param_space[PARAM_KEY]["grid_search"]
    assert [g[NAME_KEY] for g in grid] == [t.name for t in trials]
    assert tuner_setup(spec, trials, store, max_concurrent=1).tune_config.max_concurrent_trials == 1
    assert spec.resources.as_ray() == {"cpu": 2.0, "gpu": 0.5}


def test_trial_params_are_flat_absolute_and_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec, trials = spec_with(experiment={"config": "synthetic", "overrides": {"data.root": "rel/data"}})
    store = ExperimentStore(str(tmp_path / "store"), "x-0123456789ab")
    params = trial_params(spec, trials[3], store)
    assert params[SOURCE_KEY] == "synthetic" and params[NAME_KEY] == "b-s1" and list(params)[-1] == NAME_KEY
    assert params["data.root"] == str(tmp_path / "rel" / "data")  # no longer depends on the worker's cwd
    assert params["gcr.enabled"] is False and params["train.seed"] == 1
    assert params["runtime.num_threads"] == 1  # torch threads = the trial's CPU reservation
    assert params[RUN_DIR_KEY] == str(tmp_path / "store" / "x-0123456789ab" / "b-s1" / "run")
    assert trial_dirname(SimpleNamespace(config={PARAM_KEY: params})) == "b-s1"
    remote = trial_params(spec, trials[3], ExperimentStore("s3://bucket/ray", "x-0123456789ab"))
    assert remote[RUN_DIR_KEY] == ""  # URI storage: the trial's working directory, synced by Tune
    assert ExperimentStore("s3://bucket/ray/", "x-1").path == "s3://bucket/ray/x-1"
