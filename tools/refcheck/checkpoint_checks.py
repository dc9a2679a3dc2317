"""The authors' checkpoint format, read by ``eval`` and ``infer`` through :mod:`more.model.reference_names`.

The reference network builds itself at reduced width (its own seeded random init, nothing copied from our side)
and its state dict is saved the way ``scripts/train_voc.py`` saves it: the DistributedDataParallel-wrapped
network's ``state_dict()``, every name behind ``module.``. Rows: that file loads strictly into our model through
the name map with every tensor equal; the loaded model's forward equals the reference network's; and ``more``'s
validation of the loaded model on a few synthetic images equals the reference's ``build_validation`` on the same
decoded pixels (IoU / precision / recall / FP/TP per class of every column, the val cls score).

``write_golden`` writes ``authors_checkpoint.pt``: that state dict, the images and masks as their file bytes (JPEG /
PNG, so a test rebuilds the dataset byte for byte), the config overrides and the reference's numbers.
``tests/golden/test_authors_checkpoint.py`` runs ``python -m more eval`` on it without the reference.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from more.data import build_eval_dataset, collate_eval
from more.data.synth import SynthOptions, generate_dataset
from more.data.transforms import normalize
from more.eval.evaluate import OUTPUTS, evaluate
from more.eval.infer import load_run
from more.model.reference_names import DDP_PREFIX, reference_name
from tools.refcheck.build import SIZES, build_reference, voc_args
from tools.refcheck.common import EXPECTED_COMMIT, Reference, Row, approx, exact
from tools.refcheck.eval_checks import _recording

C = 3  # classes of the synthetic set
SIZE = SIZES["micro"]  # = more's model.variant=vit_micro with model.decoder_channels=32
SEED = 11  # the reference's own init
SYNTH = SynthOptions(classes=C, train=2, val=4, size=80, seed=5)
RESIZE = 64
CAM_SCALES = (1.0, 0.5)
# what `more eval` needs besides --config synthetic and data.root (the test passes the same list)
OVERRIDES = [f"data.synth_classes={C}", "model.variant=vit_micro", f"model.decoder_channels={SIZE.decoder}",
             f"eval.resize={RESIZE}", f"pseudo.cam_scales={list(CAM_SCALES)}", "eval.bkg_thre=0.5",
             "eval.batch_size=2", "data.num_workers=0", "runtime.device=cpu"]
COLUMNS = ("seg", "cam", "lam", "fused")  # the order of build_validation's scores calls (eval_checks.COLUMNS)
FIXTURE = "authors_checkpoint.pt"
CHECKPOINT_NAME = "model_iter_2000.pth"  # the file name train_voc.py gives it (the iteration is read from it)

_last: dict[str, Any] = {}


def _reference_state(ref: Reference) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(SEED)
    theirs = build_reference(ref, SIZE, num_classes=C)
    state = {DDP_PREFIX + k: v.detach().clone() for k, v in theirs.state_dict().items()}  # as DDP saves it
    return theirs, state


def _dataset(root: Path) -> dict[str, Any]:
    """The synthetic val images and masks as file bytes, and the split list."""
    generate_dataset(root, SYNTH, progress=lambda _: None)
    names = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    read = {name: ((root / "JPEGImages" / f"{name}.jpg").read_bytes(),
                   (root / "SegmentationClassAug" / f"{name}.png").read_bytes()) for name in names}
    return {"names": names,
            "jpeg": [torch.frombuffer(bytearray(read[n][0]), dtype=torch.uint8) for n in names],
            "png": [torch.frombuffer(bytearray(read[n][1]), dtype=torch.uint8) for n in names]}


def _reference_numbers(ref: Reference, theirs: torch.nn.Module, dataset: Any) -> dict[str, Any]:
    """build_validation on the pixels our loader decodes (full size; the engine resizes to crop_size itself)."""
    loader = []
    for i in range(len(dataset)):
        item = dataset[i]
        rgb = item["orig"].permute(2, 0, 1)  # (3, H, W) uint8
        loader.append((item["name"], normalize(rgb, dataset.mean, dataset.std)[None], item["mask"][None],
                       item["labels"][None]))
    args = voc_args(ref, crop_size=RESIZE, cam_scales=CAM_SCALES, bkg_thre=0.5)
    with _recording(ref) as calls, contextlib.redirect_stderr(io.StringIO()):  # tqdm's bar
        f1, _ = ref.validatation_engine.build_validation(model=theirs, data_loader=loader, args=args)
    out: dict[str, Any] = {"cls_f1": float(f1)}
    for column, (_, scores) in zip(COLUMNS, calls):
        # the engine scores 21 classes (VOC's count); the synthetic set's C + 1 come first, the rest are empty
        out[column] = {key: torch.tensor(list(scores[key].values())[: C + 1], dtype=torch.float64)
                       for key in ("iou", "precision", "recall", "confusion")}
    return out


def _compute(ref: Reference) -> tuple[list[Row], dict[str, Any]]:
    theirs, state = _reference_state(ref)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        root, ckpt = Path(tmp) / "data", Path(tmp) / CHECKPOINT_NAME
        files = _dataset(root)
        torch.save(state, ckpt)
        loaded = load_run(ckpt, [*OVERRIDES, f"data.root={root}"], config="synthetic")
        assert loaded.iteration == 2000, loaded.iteration
        ours = loaded.model.state_dict()
        theirs_state = theirs.state_dict()

        rows.append(exact("authors' checkpoint: every weight through the name map (module.-prefixed state dict)",
                          [ours[k] for k in ours], [theirs_state[reference_name(k)] for k in ours]))
        x = torch.randn(2, 3, RESIZE, RESIZE, generator=torch.Generator().manual_seed(3))
        theirs.eval()
        with torch.no_grad():
            cls, seg, _, cls_aux, tokens, _ = theirs(x)
            out = loaded.model(x)
        rows.append(approx("authors' checkpoint: loaded model's cls / aux cls / seg / class tokens",
                           [out.cls_logits, out.cls_aux_logits, out.seg_logits, out.tokens],
                           [cls, cls_aux, seg, tokens], tol=1e-5))
        dataset = build_eval_dataset(loaded.cfg, "val")
        numbers = _reference_numbers(ref, theirs, dataset)
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate_eval)
        result = evaluate(loaded.model, loader, cfg=loaded.cfg, device=torch.device("cpu"))
    rows.append(approx("authors' checkpoint: more's val cls score = the reference's (4 synthetic images)",
                       result.cls_f1, numbers["cls_f1"], tol=1e-12))
    for column in COLUMNS:
        s = result.scores[column]
        rows.append(approx(f"authors' checkpoint: more's {column} IoU / precision / recall / FP/TP = the reference's",
                           [torch.as_tensor(v, dtype=torch.float64) for v in (s.iou, s.precision, s.recall,
                                                                               s.confusion)],
                           [numbers[column][k] for k in ("iou", "precision", "recall", "confusion")], tol=1e-12))
    assert set(COLUMNS) <= set(OUTPUTS)
    return rows, {"state_dict": state, "images": files, "numbers": numbers, "overrides": OVERRIDES,
                  "config": "synthetic", "checkpoint_name": CHECKPOINT_NAME}


def checks(ref: Reference) -> list[Row]:
    rows, fixture = _compute(ref)
    _last.clear()
    _last.update(root=str(ref.root), fixture=fixture)
    return rows


def write_golden(ref: Reference, out_dir: Path, *, command: str) -> str:
    """Writes ``authors_checkpoint.pt``; returns its size."""
    if _last.get("root") != str(ref.root):
        checks(ref)
    meta = {"command": command, "reference": "zwyang6/MoRe",
            "reference_commit": ref.commit or f"unverified (no .git at {ref.root}; expected {EXPECTED_COMMIT})",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": str(torch.__version__), "size": vars(SIZE) | {"num_classes": C}, "seed": SEED,
            "synthetic": asdict(SYNTH)}
    path = Path(out_dir) / FIXTURE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"meta": meta, **_last["fixture"]}, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return f"{FIXTURE} {path.stat().st_size / 1e6:.2f} MB"
