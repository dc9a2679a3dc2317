"""The path behind the paper's Tables 1 and 2 on a real (tiny) ablation: launch, ``infer --spec`` over its
finished trials (seeds + CRF masks on train, segmentation on val), then ``report`` builds Tables 1 and 2 from those
tracked infer runs, each cell the mean of the trials' own ``infer/*/miou`` with its protocol named."""

from __future__ import annotations

import csv
import os
import subprocess

import pytest
from loopback_cluster import ablate_command, process_env, tiny_overrides, write_spec

from more.__main__ import main
from more.harness.spec import expand, load_spec, spec_hash


def _infer_runs(uri: str, digest: str) -> list:
    """The infer runs of this spec's trials (the session's store also holds other tests' infer runs)."""
    from more.tracking.store import make_client

    client = make_client(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(ids, filter_string=f"tags.`more.kind` = 'infer' and tags.`more.spec_hash` = "
                                                      f"'{digest}'", max_results=100))


def test_infer_over_a_spec_then_report_tables_1_and_2(proc_root, tmp_path, capsys):
    conditions = {"more": {}, "wo_cre": {"lir.cre_weight": 0.0}}
    spec = write_spec(proc_root / "t12.yaml", "t12_e2e", conditions,
                      overrides=tiny_overrides(proc_root / "synth", iters=3, every=3), max_concurrent=2)
    storage = proc_root / "store"
    out = subprocess.run(ablate_command(spec, storage), env=process_env(proc_root), cwd=proc_root,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    digest = spec_hash(load_spec(spec), expand(load_spec(spec)))
    uri = os.environ["MLFLOW_TRACKING_URI"]

    # bad input, before any work: a checkpoint and --spec, --out with --spec, an unknown trial, another storage
    capsys.readouterr()
    for extra, words in ((["some/ckpt"], "not both"), (["--out", str(tmp_path / "x")], "--out names one"),
                         (["--trials", "nope-s0"], "--trials nope-s0: not a trial"),
                         (["--storage", str(tmp_path / "empty")], "no experiment of spec 't12_e2e'")):
        args = ["infer", "--spec", str(spec), "--task", "seeds", *extra]
        if "--storage" not in extra:
            args += ["--storage", str(storage)]
        assert main(args) == 2, extra
        err = capsys.readouterr().err
        assert words in err, (extra, err)
    assert not _infer_runs(uri, digest)

    common = ["--spec", str(spec), "--storage", str(storage), "--tracking-uri", uri, "--workers", "1"]
    assert main(["infer", "--task", "masks", *common]) == 0
    printed = capsys.readouterr().out
    assert "== trial 1/2: more-s0 (condition more, seed 0)" in printed and "== trial 2/2: wo_cre-s0" in printed
    assert main(["infer", "--task", "seg", "--split", "val", *common]) == 0
    runs = _infer_runs(uri, digest)
    assert sorted((r.data.tags["more.condition"], r.data.tags["more.infer.task"]) for r in runs) == [
        ("more", "masks"), ("more", "seg"), ("wo_cre", "masks"), ("wo_cre", "seg")]

    reports = tmp_path / "reports"
    assert main(["report", str(spec), "--out", str(reports), "--tracking-uri", uri, "--storage", str(storage),
                 "--no-log"]) == 0
    for name in ("table1", "table2"):
        for ext in ("md", "tex", "csv", "png"):
            assert (reports / f"{name}.{ext}").is_file(), f"{name}.{ext}"
    # every cell is its trial's own infer metric (one seed: the mean is the value)
    value = {(r.data.tags["more.condition"], o): r.data.metrics[f"infer/{o}/miou"]
             for r in runs for o in ("seeds", "masks", "seg_raw") if f"infer/{o}/miou" in r.data.metrics}
    table1 = {r["condition"]: r for r in csv.DictReader((reports / "table1.csv").open()) if r["map"] == "CAM"}
    table2 = {r["condition"]: r for r in csv.DictReader((reports / "table2.csv").open())}
    assert sorted(table1) == sorted(table2) == sorted(conditions)
    for condition in conditions:
        assert float(table1[condition]["synthetic_train_seeds_s1_mean"]) == pytest.approx(value[(condition, "seeds")])
        assert float(table1[condition]["synthetic_train_masks_s1_mean"]) == pytest.approx(value[(condition, "masks")])
        assert float(table2[condition]["synthetic_val_seg_raw_s1_mean"]) == pytest.approx(value[(condition, "seg_raw")])
        assert table1[condition]["synthetic_train_masks_s1_n"] == table2[condition]["synthetic_val_seg_raw_s1_n"] == "1"
    md1 = (reports / "table1.md").read_text()
    assert "synthetic train, masks, scale 1, CRF" in md1 and "synthetic train, seeds, scale 1, raw" in md1, md1
    assert "synthetic val, seg, scale 1, raw" in (reports / "table2.md").read_text()  # the protocol of each cell
