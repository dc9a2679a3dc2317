"""``python -m more data synth|prepare|check``: generate the synthetic dataset, build a tree from the downloaded
archives (VOC 2012 + SBD, COCO 2014) or from a folder of your own images, or check a dataset tree."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from more.config import load_config

MIN_SYNTH_SIZE = 48  # measured: at 32 px and below, some training images come out without a visible object
MAX_SYNTH_CLASSES = 8  # the generator's class designs (data.synth_classes is checked against the same number)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = load_config("synthetic").data  # defaults of the synthetic preset
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    synth = sub.add_parser("synth", help="generate the synthetic dataset (VOC layout)",
                           description="Generate the synthetic weakly supervised segmentation dataset.")
    synth.add_argument("--out", required=True, help="dataset root to create (must not exist or be empty)")
    synth.add_argument("--classes", type=int, default=d.synth_classes, help=f"classes (default {d.synth_classes})")
    synth.add_argument("--train", type=int, default=d.synth_train, help=f"train images (default {d.synth_train})")
    synth.add_argument("--val", type=int, default=d.synth_val, help=f"val images (default {d.synth_val})")
    synth.add_argument("--test", type=int, default=-1, help="unlabeled test images (default max(2, val // 10))")
    synth.add_argument("--size", type=int, default=d.synth_image_size,
                       help=f"image side in pixels (default {d.synth_image_size})")
    synth.add_argument("--seed", type=int, default=d.synth_seed, help=f"random seed (default {d.synth_seed})")
    synth.add_argument("--force", action="store_true", help="replace a non-empty --out")
    _add_prepare(sub)
    check = sub.add_parser("check", help="report every problem of a dataset tree and its statistics (exit 1 if any "
                                         "problem)",
                           description="Decode every listed image and mask, report every problem found and, per "
                                       "split, the images, labelled images, classes present and label statistics.")
    check.add_argument("root", help="dataset root")
    check.add_argument("--dataset", choices=["voc", "coco", "synthetic", "custom"],
                       help="layout (default: detected: dataset.yaml -> custom/synthetic, prepare.json, else voc)")
    check.add_argument("--splits", nargs="+", help="splits to check (default: the standard ones present)")
    check.add_argument("--classes", type=int, help="number of foreground classes C (default: 20 voc, 80 coco, "
                                                   "the dataset.yaml's classes, or synth.json of a generated set)")


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    prepare = sub.add_parser("prepare", help="build a tree from downloaded archives or a folder of images",
                             description="Build a dataset tree more trains on: resumable (run it again after an "
                                         "interruption), atomic writes, never inside the sources; a second run on a "
                                         "finished tree only verifies it. ROOT/prepare.json records what was done.")
    kinds = prepare.add_subparsers(dest="kind", required=True, metavar="KIND")
    voc = kinds.add_parser("voc", help="PASCAL VOC 2012 + SBD -> SegmentationClassAug, train_aug/train/val",
                           description="VOC 2012 trainval + SBD -> SegmentationClassAug (VOC's own masks where they "
                                       "exist, SBD's otherwise) and the train_aug (10,582), train (1,464) and val "
                                       "(1,449) lists.")
    voc.add_argument("--voc", required=True, help="VOC2012 folder (or VOCdevkit, or VOCtrainval_11-May-2012.tar)")
    voc.add_argument("--sbd", required=True, help="SBD folder (benchmark_RELEASE, or benchmark.tgz)")
    coco = kinds.add_parser("coco", help="MS COCO 2014 -> class-index masks, train/val/val_part lists, labels",
                            description="COCO 2014 instances -> SegmentationClass/{train2014,val2014} (0..80, 255 "
                                        "ignore), ImageSets/{train,val,val_part}.txt and cls_labels.json.")
    coco.add_argument("--coco", required=True, help="folder holding train2014/ (or train2014.zip), val2014/ (or "
                                                    "val2014.zip) and annotations/ (or annotations_trainval2014.zip)")
    coco.add_argument("--overlap", default="smaller-wins", choices=["smaller-wins", "larger-wins", "void"],
                      help="where annotations overlap: smaller-wins (default, the authors' converter coco2voc), "
                           "larger-wins, or void (255 where classes clash)")
    coco.add_argument("--crowd", default="label", choices=["label", "void", "skip"],
                      help="crowd regions: label (default, coco2voc: painted with their class), void (255), skip")
    for parser in (voc, coco):
        parser.add_argument("--images", default="link", choices=["link", "copy"],
                            help="link to the source images (default) or copy them; images inside an archive are "
                                 "always copied out of it")
        parser.add_argument("--workers", type=int, default=0, help="threads (default: CPU count, at most 8)")
    folder = kinds.add_parser("folder", help="a folder of your images + labels CSV (or masks) -> dataset.yaml",
                              description="Describe a folder of images as a dataset with its own classes: "
                                          "ROOT/dataset.yaml, split lists and labels.json (the images stay where "
                                          "they are). Train it with data.dataset=custom data.root=ROOT.")
    folder.add_argument("--images", required=True, help="folder of the images")
    folder.add_argument("--labels", help="labels CSV: image,labels (classes separated by ';') or one 0/1 column per "
                                         "class; an optional split column (JSON {name: [classes]} also works)")
    folder.add_argument("--masks", help="folder of class-index PNGs NAME.png (0 background, 1..C, 255 ignore)")
    folder.add_argument("--classes", help="comma-separated class names in index order (default: the labels file's "
                                          "names, sorted)")
    folder.add_argument("--name", default="", help="dataset name (default: the image folder's name)")
    folder.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of the images in val when the labels file has no split column (default 0.1)")
    folder.add_argument("--seed", type=int, default=0, help="seed of that split (default 0)")
    for parser in (voc, coco, folder):
        parser.add_argument("--out", required=True, help="output root (created; never inside a source)")
        parser.add_argument("--force", action="store_true", help="write into an --out holding files more did not "
                                                                 "create")


def _synth(args: argparse.Namespace) -> int:
    from more.data.synth import SynthOptions, generate_dataset
    from more.preflight import PreflightError, output_dir

    for key, low in (("classes", 1), ("train", 1), ("val", 1), ("size", MIN_SYNTH_SIZE), ("seed", 0), ("test", -1)):
        if getattr(args, key) < low:
            why = " (smaller images lose their objects, and `data check` rejects a training image without one)" \
                if key == "size" else ""
            raise PreflightError(f"--{key} {getattr(args, key)}: must be >= {low}{why}")
    if args.classes > MAX_SYNTH_CLASSES:
        raise PreflightError(f"--classes {args.classes}: the synthetic generator has {MAX_SYNTH_CLASSES} class "
                             f"designs; use 1..{MAX_SYNTH_CLASSES}")
    output_dir(args.out, "--out")
    options = SynthOptions(classes=args.classes, train=args.train, val=args.val, size=args.size, seed=args.seed,
                           test=args.test)
    try:
        summary = generate_dataset(Path(args.out), options, force=args.force, progress=print)
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from more.outputs import own_dir

    own_dir(args.out, command="data synth")  # i18: a folder a command made carries more's marker (contract 4)
    print(summary.format())
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from more.preflight import PreflightError

    if getattr(args, "workers", 0) < 0:
        raise PreflightError(f"--workers {args.workers}: must be >= 0")
    try:
        if args.kind == "voc":
            from more.data.prepare.voc import prepare_voc

            outcome = prepare_voc(args.voc, args.sbd, args.out, images=args.images, force=args.force,
                                  workers=args.workers)
        elif args.kind == "coco":
            from more.data.prepare.coco import prepare_coco

            outcome = prepare_coco(args.coco, args.out, overlap=args.overlap, crowd=args.crowd, images=args.images,
                                   force=args.force, workers=args.workers)
        else:
            from more.data.prepare.folder import prepare_folder

            classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
            outcome = prepare_folder(args.images, args.out, labels=args.labels, masks=args.masks, classes=classes,
                                     name=args.name, val_fraction=args.val_fraction, seed=args.seed,
                                     force=args.force)
    except KeyboardInterrupt:
        print(f"interrupted: what is written stays; run the same command again to continue ({args.out})",
              file=sys.stderr)
        return 130
    print(outcome.format())
    return 0


def _check(args: argparse.Namespace) -> int:
    from more.data.check import detect_dataset, format_statistics, inspect_dataset
    from more.preflight import PreflightError, input_dir

    input_dir(args.root, "dataset root")
    if args.classes is not None and args.classes < 1:
        raise PreflightError(f"--classes {args.classes}: need the number of foreground classes, >= 1")

    dataset = args.dataset or detect_dataset(args.root)
    report = inspect_dataset(args.root, dataset, args.splits, args.classes)
    print(format_statistics(report))
    for problem in report.problems:
        print(problem)
    if report.problems:
        print(f"{len(report.problems)} problem(s) in {report.root}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{split} {n}" for split, n in report.counts.items())
    print(f"ok: {report.root} ({report.dataset}, {report.num_classes} classes): {counts}")
    return 0


def run(args: argparse.Namespace) -> int:
    return {"synth": _synth, "prepare": _prepare, "check": _check}[args.action](args)
