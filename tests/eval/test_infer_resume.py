"""``infer`` resumes: a run killed by PID finishes, once restarted, with the bytes of an uninterrupted run; a resume
with other settings is refused, naming each difference; a torn completion record costs nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from infer_helpers import assert_same_outputs, journal, leftovers, tree_digest

from more.__main__ import main
from more.eval.infer_store import DELAY_ENV

MASKS = ("seeds", "masks", "maps")


def infer(capsys, *argv: str) -> tuple[int, str]:
    code = main(["infer", "--no-tracking", *argv])
    return code, capsys.readouterr().err


def metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_killed_inference_resumes_to_the_bytes_of_an_uninterrupted_one(infer_ckpt, tmp_path, capsys):
    reference, out = tmp_path / "reference", tmp_path / "killed"
    args = [str(infer_ckpt), "--task", "masks", "--split", "train"]
    code, err = infer(capsys, *args, "--out", str(reference))
    assert code == 0, err
    total = metrics(reference)["num_images"]
    assert total == 16

    # a real process, slowed after each recorded batch / CRF image so that the kill lands midway, killed by PID
    env = {**os.environ, DELAY_ENV: "0.3"}
    proc = subprocess.Popen([sys.executable, "-m", "more", "infer", "--no-tracking", *args, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        def midway() -> bool:  # some images finished (a CRF mask recorded), others not yet
            path = out / "done.jsonl"
            return path.is_file() and b'"masks"' in path.read_bytes() and len(path.read_bytes().splitlines()) >= 6

        while not midway():
            assert proc.poll() is None, f"infer exited early: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no progress within 180 s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.stderr.close()
    lines = (out / "done.jsonl").read_bytes().splitlines()
    assert 6 <= len(lines) < 2 * total, "the kill did not land midway"
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            assert line is lines[-1], "only the last line can be torn"
    finished_at_kill = len({e["name"] for e in parsed if e["output"] == "masks"})

    code, err = infer(capsys, *args, "--out", str(out))
    assert code == 0, err
    record = metrics(out)
    assert record["num_images"] == total
    assert 0 < record["computed"] < total  # the finished images were not redone
    assert record["computed"] == total - finished_at_kill
    assert_same_outputs(reference, out, MASKS)
    assert record["outputs"] == metrics(reference)["outputs"]  # confusion counts of both runs add up the same
    assert not leftovers(out)
    assert sorted((e["name"], e["output"]) for e in journal(out)) == sorted(
        (e["name"], e["output"]) for e in journal(reference))


@pytest.fixture(scope="module")
def first_run(infer_ckpt, tmp_path_factory):
    """A finished ``seeds`` inference on two val images: the folder later invocations try to resume."""
    out = tmp_path_factory.mktemp("resume") / "out"
    code = main(["infer", "--no-tracking", str(infer_ckpt), "--task", "seeds", "--split", "val", "--out", str(out),
                 "eval.max_images=2"])
    assert code == 0
    return out


DIFFERENCES = [  # extra arguments -> the setting the refusal must name
    (["eval.bkg_thre=0.3"], "eval.bkg_thre"),
    (["--source", "lam"], "source"),
    (["--multiscale"], "multiscale"),
    (["--crf"], "crf"),  # seeds --crf is the masks task
    (["--task", "cam2seg"], "task"),
    (["--maps", "float16"], "maps"),
    (["eval.batch_size=1"], "eval.batch_size"),
    (["eval.infer_cam_scales=[1.0, 0.5]"], "scales"),
    (["eval.resize=32"], "eval.resize"),
    (["model.lam=cosine", "--source", "lam"], "model.lam"),
    (["data.mean=[0.5, 0.5, 0.5]"], "data.mean"),
    (["train.amp=bf16"], "autocast"),
    (["OTHER_CHECKPOINT"], "checkpoint_sha256"),
]


@pytest.mark.parametrize(("extra", "key"), DIFFERENCES, ids=[d[1] for d in DIFFERENCES])
def test_resume_with_other_settings_is_refused_naming_the_difference(first_run, infer_ckpt, tmp_path, capsys, extra,
                                                                     key):
    checkpoint = str(infer_ckpt)
    if extra == ["OTHER_CHECKPOINT"]:
        import shutil

        import torch

        other = tmp_path / "other"
        shutil.copytree(infer_ckpt, other)
        payload = torch.load(other / "checkpoint.pt", weights_only=True)
        first = next(iter(payload["model"]))
        payload["model"][first] = payload["model"][first] + 1.0
        torch.save(payload, other / "checkpoint.pt")
        checkpoint, extra = str(other), []
    before = tree_digest(first_run)
    code, err = infer(capsys, checkpoint, "--task", "seeds", "--split", "val", "--out", str(first_run),
                      "eval.max_images=2", *extra)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and f"{key}:" in lines[0] and "other settings" in lines[0], err
    assert tree_digest(first_run) == before


def test_other_images_are_a_difference_too(first_run, infer_ckpt, capsys):
    code, err = infer(capsys, str(infer_ckpt), "--task", "seeds", "--split", "val", "--out", str(first_run),
                      "eval.max_images=3")
    assert code == 2 and "images.count: 2 then, 3 now" in err and "images.names_sha256" in err


def test_torn_record_line_and_a_lost_record(infer_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(infer_ckpt), "--task", "masks", "--split", "val", "--out", str(out)]
    assert infer(capsys, *args)[0] == 0
    reference = tree_digest(out / "masks")
    entries = journal(out)
    last = entries[-1]
    kept = [json.dumps(e) + "\n" for e in entries[:-1]]
    (out / "done.jsonl").write_text("".join(kept) + '{"name": "' + last["name"] + '", "outp')  # torn by a kill
    (out / "masks" / f"{last['name']}.png").unlink()  # its file never made it either
    code, err = infer(capsys, *args)
    assert code == 0, err
    assert metrics(out)["computed"] == 1 and metrics(out)["num_images"] == 6
    assert tree_digest(out / "masks") == reference
    assert len(journal(out)) == len(entries)  # every line parses again; the redone image recorded once
