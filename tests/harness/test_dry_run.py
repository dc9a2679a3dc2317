"""``ablate --dry-run`` before the data is there: the trials, the GPU-hour estimate and the reuse plan first, then
every check that failed (exit 2), and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from more.__main__ import main
from more.config import load_config

REPO = Path(__file__).resolve().parents[2]


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_table3_without_voc_prints_the_trials_and_the_estimate_then_the_failed_checks(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the preset's data.root (work/data/VOC2012) is relative to the working directory
    root = load_config(str(REPO / "experiments" / "voc.yaml")).data.root
    if Path(root).exists():
        pytest.skip(f"VOC is at {root} on this machine: the dry run would find it")
    code = main(["ablate", str(REPO / "ablations" / "table3.yaml"), "--dry-run", "--storage", str(tmp_path / "store"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    out, err = capsys.readouterr()
    assert code == 2
    names = [f"{c}-s{s}" for c in ("baseline", "wo_cre", "wo_ure", "wo_gcr", "more") for s in (0, 1, 2)]
    table = out[out.index("trial "):out.index("15 trials;")]
    assert [line.split(" | ")[0].strip() for line in table.splitlines()[2:] if line.strip()] == names
    assert "15 trials; estimated 93 GPU-hours (6.2 per trial)" in out
    assert "15 to run, 0 reused" in out and out.rstrip().endswith("dry run: nothing launched")
    # the failed checks come after all that, on stderr, once for all the trials they concern
    assert err.splitlines() == [f"error: data.root={root!r}: folder does not exist (trial baseline-s0 and 14 others)"]
    assert tree(tmp_path) == []  # nothing written: no storage, no MLflow store


def test_a_dry_run_with_all_checks_passing_exits_0(tmp_path, capsys):
    from loopback_cluster import tiny_overrides, write_spec

    spec = write_spec(tmp_path / "ok.yaml", "ok", {"more": {}}, overrides=tiny_overrides(tmp_path / "synth"))
    assert main(["ablate", str(spec), "--dry-run", "--storage", str(tmp_path / "store"), "--no-tracking"]) == 0
    out, err = capsys.readouterr()
    assert "1 to run, 0 reused" in out and not err
    assert "ok  GPUs: none asked for" in out
