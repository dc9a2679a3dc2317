"""``python -m more ablate`` without Ray: dry run, spec errors, and the refusals that happen before launching."""

from __future__ import annotations

from pathlib import Path

from loopback_cluster import tiny_overrides, write_spec

from more.__main__ import main
from more.harness.spec import expand, load_spec, spec_hash


def demo_spec(tmp_path: Path, **extra) -> Path:
    return write_spec(
        tmp_path / "demo.yaml", "demo", {"more": {}, "wo_gcr": {"gcr.enabled": False}},
        overrides=tiny_overrides(tmp_path / "synth"), seeds=[0, 1], **extra,
    )


def test_dry_run_prints_the_trials_and_launches_nothing(tmp_path, capsys):
    spec = demo_spec(tmp_path, resources={"cpus": 1, "gpus": 0.5}, gpu_hours_per_trial=0.25, max_concurrent=2)
    digest = spec_hash(load_spec(spec), expand(load_spec(spec)))
    storage = tmp_path / "store"
    assert main(["ablate", str(spec), "--dry-run", "--storage", str(storage)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"spec demo (hash {digest}): synthetic"
    assert "metric val/cls_f1 (max); resources per trial: 1 CPU, 0.5 GPU; max concurrent: 2; max failures: 1" in out
    table = out[out.index("trial "):].splitlines()
    assert table[:6] == [
        "trial     | condition | overrides         | seed",
        "----------+-----------+-------------------+-----",
        "more-s0   | more      | -                 | 0",
        "more-s1   | more      | -                 | 1",
        "wo_gcr-s0 | wo_gcr    | gcr.enabled=false | 0",
        "wo_gcr-s1 | wo_gcr    | gcr.enabled=false | 1",
    ]
    assert "4 trials; estimated 1 GPU-hours (0.25 per trial)" in out
    assert out.rstrip().endswith("dry run: nothing launched")
    assert not storage.exists()


def test_dry_run_of_cpu_and_unestimated_gpu_specs(tmp_path, capsys):
    assert main(["ablate", str(demo_spec(tmp_path)), "--dry-run"]) == 0
    assert "4 trials; estimated 0 GPU-hours (CPU-only trials)" in capsys.readouterr().out
    spec = demo_spec(tmp_path, resources={"cpus": 2, "gpus": 1})
    assert main(["ablate", str(spec), "--dry-run"]) == 0
    assert "4 trials; estimated unknown (set gpu_hours_per_trial in the spec)" in capsys.readouterr().out


def test_bad_spec_exits_2_with_the_condition_and_key(tmp_path, capsys):
    spec = write_spec(tmp_path / "bad.yaml", "bad", {"wo_cre": {"lir.cre_weight": "lots"}},
                      overrides=tiny_overrides(tmp_path / "synth"))
    assert main(["ablate", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "spec error: " in err and "condition 'wo_cre'" in err and "lir.cre_weight='lots'" in err


def test_resume_of_a_changed_spec_is_refused_naming_both_hashes(tmp_path, capsys):
    spec = demo_spec(tmp_path)
    digest = spec_hash(load_spec(spec), expand(load_spec(spec)))
    storage = tmp_path / "store"
    old = storage / "demo-0123456789ab"  # what a first launch of an earlier version of the spec left
    old.mkdir(parents=True)
    (old / "spec_hash").write_text("0123456789ab\n")
    assert main(["ablate", str(spec), "--resume", "--storage", str(storage)]) == 2
    err = capsys.readouterr().err
    assert "spec 'demo' changed since its first launch" in err
    assert "stored hash 0123456789ab" in err and f"current hash {digest}" in err


def test_resume_without_an_experiment_is_refused(tmp_path, capsys):
    assert main(["ablate", str(demo_spec(tmp_path)), "--resume", "--storage", str(tmp_path / "none")]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_tampered_hash_in_the_experiment_folder_is_refused(tmp_path, capsys):
    spec = demo_spec(tmp_path)
    digest = spec_hash(load_spec(spec), expand(load_spec(spec)))
    folder = tmp_path / "store" / f"demo-{digest}"
    folder.mkdir(parents=True)
    (folder / "spec_hash").write_text("ffffffffffff\n")
    assert main(["ablate", str(spec), "--storage", str(tmp_path / "store")]) == 2
    assert f"holds spec hash ffffffffffff, but the spec now hashes to {digest}" in capsys.readouterr().err
