"""Search spaces and specs: define-by-run sampling under constraints, and bad specs naming the key at fault."""

from __future__ import annotations

import optuna
import pytest
import yaml

from more.harness.spec import SpecError
from more.search.space import SpaceError, parse_space
from more.search.spec import load_search_spec, parse_search_spec, search_hash

SPACE = {
    "pseudo.par_bg_high": {"type": "float", "low": 0.3, "high": 0.9, "step": 0.05},  # listed first on purpose
    "pseudo.par_bg_low": {"type": "float", "low": 0.1, "high": 0.5},
    "lir.ure_kernel": {"type": "int", "low": 2, "high": 6},
    "lir.cre_weight": {"type": "float", "low": 0.01, "high": 1.0, "log": True},
    "gcr.top_k": {"type": "categorical", "choices": [1, 2, 3]},
}


def test_200_define_by_run_samples_never_violate_the_constraints():
    space = parse_space(SPACE, ["pseudo.par_bg_low + 0.05 < pseudo.par_bg_high"])
    assert space.keys.index("pseudo.par_bg_low") < space.keys.index("pseudo.par_bg_high")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=20))
    seen = []

    def objective(trial):
        v = space.sample(trial)
        seen.append(v)
        return v["pseudo.par_bg_high"] - v["pseudo.par_bg_low"] + 0.01 * v["lir.ure_kernel"]

    study.optimize(objective, n_trials=200)
    assert len(seen) == 200
    for v in seen:
        assert v["pseudo.par_bg_low"] + 0.05 < v["pseudo.par_bg_high"], v  # lambda_l < lambda_h, with the margin
        assert 0.1 <= v["pseudo.par_bg_low"] <= 0.5 and v["pseudo.par_bg_high"] <= 0.9
        assert round(v["pseudo.par_bg_high"] / 0.05, 6).is_integer()  # still on the step grid
        assert isinstance(v["lir.ure_kernel"], int) and 2 <= v["lir.ure_kernel"] <= 6
        assert 0.01 <= v["lir.cre_weight"] <= 1.0 and v["gcr.top_k"] in (1, 2, 3)
        assert space.violations(v) == []
    # the sampler explored the low end of lambda_h too (the raised bound is per trial, not a fixed cut)
    assert min(v["pseudo.par_bg_high"] for v in seen) < 0.5


def test_int_constraint_is_strict():
    space = parse_space({"a.x": {"type": "int", "low": 0, "high": 3}, "a.y": {"type": "int", "low": 0, "high": 4}},
                        ["a.x < a.y"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    values = []
    study.optimize(lambda t: values.append(space.sample(t)) or 0.0, n_trials=60)
    assert all(v["a.x"] < v["a.y"] for v in values)
    assert {v["a.x"] for v in values} == {0, 1, 2, 3}


@pytest.mark.parametrize("space, constraints, message", [
    ({"eval.bkg_thre": {"type": "float", "lo": 0.1, "high": 0.9}}, None, "space.eval.bkg_thre: unknown field 'lo'"),
    ({"eval.bkg_thre": {"type": "float", "low": 0.9, "high": 0.1}}, None, "space.eval.bkg_thre: low=0.9 must be <"),
    ({"lir.cre_weight": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, None,
     "space.lir.cre_weight: log=true needs low > 0"),
    ({"lir.ure_kernel": {"type": "int", "low": 1.5, "high": 4}}, None,
     "space.lir.ure_kernel: low=1.5: need an integer"),
    ({"gcr.top_k": {"type": "categorical", "choices": []}}, None, "space.gcr.top_k: choices=[]"),
    ({"a.x": {"type": "uniform", "low": 0, "high": 1}}, None, "space.a.x: type='uniform'"),
    ({"a.x": {"type": "float", "low": 0, "high": 1}}, ["a.x < a.z"], "'a.z' is not a key of space"),
    ({"a.x": {"type": "float", "low": 0, "high": 1}, "a.y": {"type": "float", "low": 0, "high": 1}},
     ["a.x < a.y", "a.y < a.x"], "a cycle"),
    ({"a.x": {"type": "float", "low": 0, "high": 0.9}, "a.y": {"type": "float", "low": 0, "high": 0.95}},
     ["a.x + 0.1 < a.y"], "cannot hold when a.x = 0.9"),
    ({"a.x": {"type": "float", "low": 0, "high": 1}}, ["a.x <= 2"], "expected 'KEY < KEY'"),
])
def test_bad_spaces_name_the_key(space, constraints, message):
    with pytest.raises(SpaceError) as info:
        parse_space(space, constraints)
    assert message in str(info.value)


def base_training(**extra):
    return {"name": "t", "kind": "training", "experiment": {"config": "synthetic"},
            "space": {"pseudo.par_bg_low": {"type": "float", "low": 0.1, "high": 0.3}}, **extra}


@pytest.mark.parametrize("data, message", [
    (base_training(trails=3), "unknown search key 'trails'; did you mean 'trials'?"),
    (base_training(tuning_split="train"), "unknown search key 'tuning_split' (only for kind cached)"),
    (base_training(space={"pseudo.par_bg_lo": {"type": "float", "low": 0.1, "high": 0.3}}), "space.pseudo.par_bg_lo"),
    (base_training(space={"loss.seg_weight": {"type": "float", "low": -1.0, "high": 0.3}}), "space.loss.seg_weight"),
    (base_training(metric="val/seg/mIoU"), "metric='val/seg/mIoU'"),
    ({"name": "c", "kind": "cached", "space": {"lir.ure_phi": {"type": "float", "low": 1, "high": 2}}},
     "space.lir.ure_phi: a cached search over seed maps can only tune eval.bkg_thre"),
    ({"name": "c", "kind": "cachd", "space": {}}, "search.kind='cachd'"),
])
def test_bad_specs_name_the_key(data, message):
    with pytest.raises(SpecError) as info:
        parse_search_spec(data)
    assert message in str(info.value)


def test_shipped_search_specs_load_and_hash_stably(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    cached = load_search_spec(root / "experiments" / "search_seed_thresholds.yaml")
    assert cached.kind == "cached" and cached.tuning_split != cached.report_split
    training = load_search_spec(root / "experiments" / "search_training.yaml")
    assert training.kind == "training" and training.max_concurrent >= 2 and training.scheduler["type"] == "asha"
    assert any(str(c).startswith("pseudo.par_bg_low") for c in training.space.constraints)
    assert search_hash(training) == search_hash(load_search_spec(root / "experiments" / "search_training.yaml"))
    text = (root / "experiments" / "search_training.yaml").read_text()
    changed = yaml.safe_load(text)
    changed["search"]["trials"] = 999  # more trials continue the same study
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(changed))
    assert search_hash(load_search_spec(tmp_path / "s.yaml")) == search_hash(training)


def test_duplicate_keys_are_refused(tmp_path):
    (tmp_path / "s.yaml").write_text("search:\n  name: a\n  name: b\n")
    with pytest.raises(SpecError, match="duplicate key 'name'"):
        load_search_spec(tmp_path / "s.yaml")
