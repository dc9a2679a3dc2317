"""The global batch (processes x train.batch_size x train.accum_steps) in ``config show`` and the ablation dry run."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from more.config import ConfigError, load_config
from more.config.batch import global_batch, global_batches_text
from more.harness.spec import expand, parse_spec


def test_global_batch_counts_processes_images_and_micro_steps():
    cfg = load_config("coco", ["train.batch_size=4", "train.accum_steps=2"])
    assert global_batch(cfg) == 8 and global_batch(cfg, 2) == 16
    assert global_batches_text([cfg, cfg], 2) == "16 = 2 processes x 4 images x 2 accumulation steps"
    one = load_config("coco", ["train.batch_size=1"])
    assert global_batches_text([one]) == "1 = 1 process x 1 image x 1 accumulation step"
    assert global_batches_text([cfg, one]) == (
        "differs between trials: 8 = 1 process x 4 images x 2 accumulation steps; "
        "1 = 1 process x 1 image x 1 accumulation step")


@pytest.mark.parametrize("value", ["0", "-2"])
def test_accum_steps_must_be_positive(value):
    with pytest.raises(ConfigError, match=f"train.accum_steps={value}: must be > 0"):
        load_config("synthetic", [f"train.accum_steps={value}"])


def test_config_show_prints_the_global_batch_as_a_yaml_comment():
    out = subprocess.run([sys.executable, "-m", "more", "config", "show", "coco", "train.accum_steps=2"],
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1].startswith("# global batch: 8 = 1 process x 4 images x 2 accumulation steps")
    assert yaml.safe_load(out)["train"]["accum_steps"] == 2  # still a loadable config


def test_dry_run_prints_the_global_batch_of_the_trials():
    from more.harness.dry_run import dry_run_text

    data = {"name": "demo", "experiment": {"config": "synthetic", "overrides": {"train.batch_size": 4}},
            "conditions": {"more": {}}, "seeds": [0], "resources": {"workers": 2, "cpus": 0.5}}
    parsed = parse_spec(data)
    assert ("global batch (processes x train.batch_size x train.accum_steps): 8 = 2 processes x 4 images x 1 "
            "accumulation step") in dry_run_text(parsed, expand(parsed), "0123456789ab")
    parsed = parse_spec({**data, "sweeps": {"train.accum_steps": [1, 2]}})
    assert ("differs between trials: 8 = 2 processes x 4 images x 1 accumulation step; 16 = 2 processes x 4 images "
            "x 2 accumulation steps") in dry_run_text(parsed, expand(parsed), "0123456789ab")
