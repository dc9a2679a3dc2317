"""Ablation specs: expansion (conditions x sweep points x seeds), validation through load_config, hashing."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from more.config import TABLE3_CONDITIONS
from more.harness.spec import SpecError, expand, load_spec, parse_spec, spec_hash, trial_name

REPO = Path(__file__).resolve().parents[2]


def spec_dict(**changes) -> dict:
    base = {
        "name": "demo",
        "experiment": {"config": "synthetic", "overrides": {"train.max_iters": 10}},
        "conditions": {"more": {}, "wo_cre": {"lir.cre_weight": 0.0}},
        "seeds": [0, 1],
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}  # None drops a key (a key without a value is an error)


def expand_dict(data: dict):
    spec = parse_spec(data)
    return spec, expand(spec)


def test_conditions_times_grid_times_seeds_in_override_order():
    spec, trials = expand_dict(spec_dict(
        experiment={"config": "synthetic", "overrides": {"lir.cre_weight": 0.3, "lir.ure_weight": 0.05}},
        sweeps={"gcr.top_k": [1, 2, 3], "lir.ure_weight": [0.2, 0.4]},
    ))
    assert len(trials) == 2 * 3 * 2 * 2
    assert trials[0].name == "more-top_k=1-ure_weight=0.2-s0"
    assert [t.name for t in trials[:4]] == [
        "more-top_k=1-ure_weight=0.2-s0", "more-top_k=1-ure_weight=0.2-s1",
        "more-top_k=1-ure_weight=0.4-s0", "more-top_k=1-ure_weight=0.4-s1",
    ]
    wo_cre = next(t for t in trials if t.name == "wo_cre-top_k=3-ure_weight=0.4-s1")
    # experiment < condition < sweep point < seed
    assert wo_cre.overrides == {"lir.cre_weight": 0.0, "lir.ure_weight": 0.4, "gcr.top_k": 3, "train.seed": 1}
    assert wo_cre.sweep == {"gcr.top_k": 3, "lir.ure_weight": 0.4}
    assert wo_cre.condition == "wo_cre" and wo_cre.seed == 1
    assert len({t.name for t in trials}) == len(trials)


def test_one_at_a_time_varies_each_key_around_the_base_and_skips_the_base_value():
    _, trials = expand_dict(spec_dict(
        conditions=None, seeds=[3], sweep_mode="one_at_a_time",
        sweeps={"lir.ure_phi": [1.0, 1.2, 1.4], "loss.seg_weight": [0.06]},  # 1.2 is the base value
    ))
    assert [t.name for t in trials] == ["base-s3", "base-ure_phi=1.0-s3", "base-ure_phi=1.4-s3",
                                        "base-seg_weight=0.06-s3"]
    assert trials[0].overrides == {"train.max_iters": 10, "train.seed": 3}
    assert trials[2].overrides == {"train.max_iters": 10, "lir.ure_phi": 1.4, "train.seed": 3}


def test_trial_names_are_filesystem_safe():
    assert trial_name("more", {"pseudo.cam_scales": [1.0, 0.5]}, 2) == "more-cam_scales=1.0_0.5-s2"
    assert trial_name("c", {"runtime.run_name": "a b/c"}, 0) == "c-run_name=a_b_c-s0"
    assert trial_name("c", {"gcr.enabled": False}, 0) == "c-enabled=false-s0"


@pytest.mark.parametrize("changes, message", [
    ({"conditons": {}}, "unknown spec key 'conditons'; did you mean 'conditions'?"),
    ({"seed": [0]}, "unknown spec key 'seed'; did you mean 'seeds'?"),
    ({"sweeps": {"gcr.top_k": []}}, "sweeps.gcr.top_k=[]: the grid is empty"),
    ({"seeds": []}, "seeds=[]: the grid is empty"),
    ({"seeds": [0, 0]}, "need distinct integers"),
    ({"conditions": {}}, "need a non-empty mapping"),
    ({"resources": {"gpu": 1}}, "resources.gpu: unknown key; did you mean 'gpus'?"),
    ({"resources": {"cpus": 0}}, "resources.cpus=0: need a number > 0"),
    ({"resources": {"gpus": 1.5}}, "resources.gpus=1.5: need a fraction in [0, 1] or a whole number"),
    ({"resources": {"gpus": -1}}, "resources.gpus=-1"),
    ({"metric": "val/seg/mIoU"}, "metric='val/seg/mIoU': unknown metric 'mIoU' (one of miou, precision, recall, "
                                 "confusion, miou_present); did you mean 'val/seg/miou'?"),
    ({"metric": "val/sge/miou"}, "metric='val/sge/miou': unknown output 'sge' (one of cam, aux_cam, lam, fused, "
                                 "seg); did you mean 'val/seg/miou'?"),
    ({"metric": "seg_miou"}, "metric='seg_miou': not a reported metric"),
    ({"mode": "maximize"}, "mode='maximize': must be one of max, min; did you mean 'max'?"),
    ({"mode": "min"}, "mode='min' for metric 'val/seg/miou': higher is better; use mode: max"),
    ({"sweep_mode": "one_at_a_time"}, "sweep_mode=one_at_a_time needs 'sweeps'"),
    ({"scheduler": {"type": "asha", "grace": 2}}, "scheduler.grace: unknown key; did you mean 'grace_period'?"),
    ({"scheduler": {"type": "asha", "grace_period": 10, "max_t": 5}}, "grace_period=10 exceeds max_t=5"),
    ({"stop": {"val/seg/miu": 50}}, "stop.val/seg/miu='val/seg/miu': unknown metric 'miu'"),
    ({"checkpoints": {"keep": 0}}, "checkpoints.keep=0: need an integer >= 1"),
    ({"max_concurrent": 0}, "max_concurrent=0: need an integer >= 1"),
    ({"conditions": {"w/o cre": {}}}, "name 'w/o cre' must be letters, digits and underscores"),
    ({"experiment": {"config": "nope.yaml"}}, "experiment.config='nope.yaml': no such file"),
])
def test_spec_errors_name_the_key(changes, message):
    with pytest.raises(SpecError) as err:
        expand_dict(spec_dict(**changes))
    assert message in str(err.value)


@pytest.mark.parametrize("changes, message", [
    # a bad key inside a condition
    ({"conditions": {"wo_cre": {"lir.cre_wieght": 0.0}}},
     "condition 'wo_cre': override unknown config key 'lir.cre_wieght'; did you mean 'lir.cre_weight'?"),
    # a bad value inside a condition
    ({"conditions": {"wo_cre": {"lir.cre_weight": -1}}}, "condition 'wo_cre': lir.cre_weight=-1.0: must be >= 0"),
    # a bad value at one sweep point only (synthetic crop 128 -> an 8x8 patch grid)
    ({"sweeps": {"lir.ure_kernel": [4, 99]}},
     "condition 'more', sweep point {'lir.ure_kernel': 99}: lir.ure_kernel=99: d must be between 1 and the patch grid"),
    # a typo in a sweep key
    ({"sweeps": {"gcr.topk": [1]}},
     "condition 'more', sweep point {'gcr.topk': 1}: override unknown config key 'gcr.topk'; "
     "did you mean 'gcr.top_k'?"),
    # a bad experiment override
    ({"experiment": {"config": "synthetic", "overrides": {"train.max_iters": "many"}}},
     "experiment: override train.max_iters='many': expected an integer"),
])
def test_trials_are_validated_through_load_config(changes, message):
    with pytest.raises(SpecError) as err:
        expand_dict(spec_dict(**changes))
    assert message in str(err.value)


def test_duplicate_condition_names_are_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(textwrap.dedent("""\
        name: dup
        experiment: {config: synthetic}
        conditions:
          wo_cre: {lir.cre_weight: 0.0}
          more: {}
          wo_cre: {lir.ure_weight: 0.0}
        """))
    with pytest.raises(SpecError, match=r"duplicate key 'wo_cre' at line 6 \(first defined at line 4\)"):
        load_spec(path)


def test_config_path_is_found_next_to_the_spec_folder(tmp_path, monkeypatch):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "mine.yaml").write_text("preset: synthetic\ntrain:\n  max_iters: 7\n")
    (tmp_path / "ablations").mkdir()
    spec_path = tmp_path / "ablations" / "a.yaml"
    spec_path.write_text("name: a\nexperiment: {config: experiments/mine.yaml}\n")
    monkeypatch.chdir(tmp_path / "ablations")  # neither the cwd nor the spec folder holds experiments/
    spec = load_spec(spec_path)
    assert spec.source == str((tmp_path / "experiments" / "mine.yaml").resolve())
    (trial,) = expand(spec)
    assert trial.name == "base-s0"


def test_hash_follows_what_decides_results(tmp_path):
    spec, trials = expand_dict(spec_dict())
    digest = spec_hash(spec, trials)
    assert len(digest) == 12 and int(digest, 16) >= 0
    same = spec_dict(paper={"rows": {"more": {"miou": 76.4}}}, tracking={"experiment": "x"}, max_concurrent=3,
                     max_failures=5)
    same["conditions"] = {"wo_cre": {"lir.cre_weight": 0.0}, "more": {}}  # order of conditions does not matter
    assert spec_hash(*expand_dict(same)) == digest
    for changed in (spec_dict(seeds=[0, 2]), spec_dict(resources={"cpus": 2}), spec_dict(metric="val/cam/miou"),
                    spec_dict(conditions={"more": {}, "wo_cre": {"lir.cre_weight": 0.01}})):
        assert spec_hash(*expand_dict(changed)) != digest
    # the experiment file's content is part of the hash
    exp = tmp_path / "e.yaml"
    exp.write_text("preset: synthetic\n")
    first = spec_hash(*expand_dict(spec_dict(experiment={"config": str(exp)})))
    exp.write_text("preset: synthetic\ntrain: {max_iters: 5}\n")
    assert spec_hash(*expand_dict(spec_dict(experiment={"config": str(exp)}))) != first


@pytest.mark.parametrize("path", sorted((REPO / "ablations").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_specs_expand(path):
    spec = load_spec(path)
    trials = expand(spec)
    assert trials and spec.metric == "val/seg/miou" and spec.mode == "max"
    assert spec.name == path.stem
    if "synthetic" in path.stem:
        assert spec.source == str(REPO / "experiments" / "synthetic.yaml")
        assert spec.resources.cpus == 1 and spec.resources.gpus == 0 and spec.max_concurrent == 2
    else:
        assert spec.source == str(REPO / "experiments" / "voc.yaml") and spec.resources.gpus == 1


@pytest.mark.parametrize("name", ["table3", "table3_synthetic"])
def test_table3_specs_hold_the_paper_rows(name):
    spec = load_spec(REPO / "ablations" / f"{name}.yaml")
    assert spec.conditions == TABLE3_CONDITIONS
    # Table 3 of the paper (VOC val): precision, recall, mIoU
    assert spec.paper["rows"] == {
        "baseline": {"precision": 76.2, "recall": 46.5, "miou": 41.6},
        "wo_cre": {"precision": 75.3, "recall": 80.1, "miou": 65.0},
        "wo_ure": {"precision": 84.3, "recall": 85.7, "miou": 74.4},
        "wo_gcr": {"precision": 81.6, "recall": 85.5, "miou": 72.1},
        "more": {"precision": 84.5, "recall": 88.0, "miou": 76.4},
    }


def test_table3_has_three_seeds_and_sensitivity_sweeps_one_key_at_a_time():
    table3 = load_spec(REPO / "ablations" / "table3.yaml")
    assert table3.seeds == [0, 1, 2] and len(expand(table3)) == 15
    sens = load_spec(REPO / "ablations" / "sensitivity.yaml")
    assert sens.sweep_mode == "one_at_a_time"
    assert set(sens.sweeps) == {"gcr.top_k", "lir.ure_phi", "lir.ure_kernel", "lir.cre_weight", "lir.ure_weight",
                                "loss.seg_weight"}
    trials = expand(sens)
    assert len(trials) == 1 + sum(len(v) for v in sens.sweeps.values())  # no listed value equals the base
    assert all(len(t.sweep) <= 1 for t in trials)


def test_cluster_yaml_passes_ray_schema_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    head = " ".join(config["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token ray start --head" in head and "--dashboard-host=127.0.0.1" in head
    assert "mlflow server --host $HEAD_IP" in head and "0.0.0.0" not in head  # the private address only
    assert any("MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in c for c in config["worker_setup_commands"])
    assert any("pip install -q -c constraints.txt -e ." in c for c in config["setup_commands"])
    assert config["available_node_types"]["gpu_worker"]["max_workers"] > 0
    broken = dict(config, max_worker=3)
    with pytest.raises(Exception, match="max_worker"):
        validate_config(prepare_config(broken))
