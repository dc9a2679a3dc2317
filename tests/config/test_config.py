"""Config: defaults, presets, overrides, fidelity, validation errors, YAML round trip, shipped experiments."""

from __future__ import annotations

from pathlib import Path

import pytest

from more.config import (
    FIDELITY_SWITCHES,
    ConfigError,
    apply_overrides,
    dump_yaml,
    from_dict,
    get,
    load_config,
    resolved_top_k,
    save_config,
    to_flat,
)
from more.config.load import read_yaml

REPO = Path(__file__).resolve().parents[2]


def test_voc_preset_is_the_reference_recipe():
    cfg = load_config("voc")
    assert (cfg.train.max_iters, cfg.train.batch_size, cfg.data.crop_size) == (20000, 4, 448)
    assert (cfg.optim.lr, cfg.optim.head_lr_mult, cfg.optim.warmup_iters, cfg.optim.weight_decay) == (
        6e-5,
        10.0,
        1500,
        0.01,
    )
    assert (cfg.lir.cre_weight, cfg.lir.ure_weight, cfg.loss.seg_weight) == (0.2, 0.1, 0.12)
    assert (cfg.lir.ure_phi, cfg.lir.ure_kernel, cfg.lir.ure_num_tokens, cfg.lir.cre_temperature) == (1.2, 6, 8, 0.5)
    assert (cfg.pseudo.par_bg_high, cfg.pseudo.par_bg_low) == (0.7, 0.25)
    assert (cfg.pseudo.cre_high, cfg.pseudo.cre_low, cfg.pseudo.main_high, cfg.pseudo.main_low) == (
        0.5,
        0.25,
        0.6,
        0.35,
    )
    assert cfg.pseudo.cam_scales == [1.0, 0.5, 0.75, 1.5]
    assert (cfg.pseudo.mask_switch_iter, cfg.loss.seg_start) == (10000, 2000)
    assert resolved_top_k(cfg) == 10  # int(0.5 * C) with C = 20 (§7.2)
    assert cfg.model.num_registers == 4 and cfg.fidelity == "reference"


def test_coco_preset():
    cfg = load_config("coco")
    assert resolved_top_k(cfg) == 40 and cfg.train.max_iters == 80000 and cfg.lir.cre_temperature == 0.1
    assert (cfg.loss.ptc_start, cfg.loss.lir_start, cfg.loss.seg_start) == (8000, 12000, 16000)
    assert cfg.pseudo.cam_scales == [1.0, 0.5, 0.75, 1.25, 1.5] and cfg.eval.bkg_thre == 0.45


def test_overrides_parse_yaml_values():
    cfg = load_config(
        "synthetic",
        [
            "lir.cre_weight=0.05",
            "pseudo.cam_scales=[1.0, 0.5]",
            "gcr.enabled=false",
            "loss.energy_scale=1e-7",
            "model.lam=cosine",
        ],
    )
    assert cfg.lir.cre_weight == 0.05 and cfg.pseudo.cam_scales == [1.0, 0.5]
    assert cfg.gcr.enabled is False and cfg.loss.energy_scale == 1e-7 and cfg.model.lam == "cosine"


def test_fidelity_paper_flips_every_switch_and_explicit_keys_win():
    cfg = load_config("voc", ["fidelity=paper"])
    for key, (_ref, paper) in FIDELITY_SWITCHES.items():
        assert get(cfg, key) == paper, key
    assert resolved_top_k(cfg) == 392  # paper's K = 0.5 * 784
    mixed = load_config("voc", ["fidelity=paper", "gcr.similarity=dot"])
    assert mixed.gcr.similarity == "dot" and mixed.gcr.fusion == "paper"
    assert load_config("voc").gcr.weighting == "sum_product" and cfg.gcr.weighting == "dot"  # §7.17, Eq. (4)


def test_readme_fidelity_table_lists_every_switch():
    """The README's paper-vs-code table names exactly the keys that ``fidelity`` flips."""
    import re

    text = (REPO / "README.md").read_text()
    section = text.split("\n## Fidelity\n", 1)[1].split("\n## ", 1)[0]
    table = next(block for block in section.split("\n\n") if block.startswith("| paper vs code"))
    keys = {k for row in table.splitlines()[2:] for k in re.findall(r"`([a-z_]+\.[a-z_]+)`", row.split(" | ")[1])}
    assert keys == set(FIDELITY_SWITCHES)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("lir.cre_wieght=0.1", "did you mean 'lir.cre_weight'"),
        ("pseudo.par_bg_low=0.8", "pseudo.par_bg_low=0.8"),
        ("pseudo.main_high=1.0", "pseudo.main_high=1.0"),
        ("lir.ure_phi=0", "lir.ure_phi=0.0"),
        ("lir.ure_phi=2.5", "lir.ure_phi=2.5"),
        ("lir.ure_kernel=29", "lir.ure_kernel=29"),
        ("lir.ure_kernel=0", "lir.ure_kernel=0"),
        ("gcr.top_k_ratio=0.01", "K resolves to 0"),
        ("lir.ure_num_tokens=0", "lir.ure_num_tokens=0"),
        ("lir.cre_weight=-0.1", "lir.cre_weight=-0.1"),
        ("data.hflip_prob=1.5", "data.hflip_prob=1.5"),
        ("train.batch_size=2.5", "train.batch_size=2.5"),
        ("gcr.enabled=yes_please", "gcr.enabled='yes_please'"),
        ("train.amp=fp16", "did you mean 'bf16'"),
        ("model.variant=vit_b32", "model.variant='vit_b32'"),
        ("noequals", "key=value"),
    ],
)
def test_bad_overrides_name_key_and_value(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config("voc", [override])
    assert needle in str(err.value)


def test_bad_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: voc\nlir:\n  cre_weight: -1\n")
    with pytest.raises(ConfigError, match="lir.cre_weight=-1"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("preset: voc\nlri:\n  cre_weight: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml: unknown config key 'lri.cre_weight'"):
        load_config(unknown)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping"):
        load_config(tmp_path / "list.yaml")


def test_paths_that_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="data.root="):
        load_config("voc", [f"data.root={tmp_path / 'nope'}"], check_paths=True)
    with pytest.raises(ConfigError, match="model.pretrained="):
        load_config("synthetic", [f"model.pretrained={tmp_path / 'w.pth'}"], check_paths=True)
    load_config("synthetic", [f"data.root={tmp_path / 'generated_later'}"], check_paths=True)  # synthetic: generated


def test_round_trip_yaml_and_flat(tmp_path):
    cfg = load_config("synthetic", ["fidelity=paper", "gcr.similarity=dot", "train.seed=3"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(path) == cfg
    assert from_dict(read_yaml(path)) == cfg
    assert from_dict(to_flat(cfg)) == cfg
    assert not list(path.parent.glob("*.tmp"))
    assert "fidelity: paper" in dump_yaml(cfg)


def test_apply_overrides_validates():
    cfg = load_config("synthetic")
    assert apply_overrides(cfg, ["train.seed=7"]).train.seed == 7 and cfg.train.seed == 0
    with pytest.raises(ConfigError, match="train.seed"):
        apply_overrides(cfg, ["train.seed=-1"])


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_experiment_loads(path):
    if "search" in read_yaml(path):
        pytest.skip("search spec, validated by the search tests")
    cfg = load_config(path)
    assert cfg.name
