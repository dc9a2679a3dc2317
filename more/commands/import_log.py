"""``python -m more import-log PATH --spec SPEC [--condition NAME] [--tracking-uri URI]``: the authors' training log
(zwyang6/MoRe ``logs/voc_train.log`` / ``logs/coco_train.log`` format) as an MLflow run in the spec's experiment,
its metrics named like ours (:mod:`more.tracking.authors_run`)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", help="a training log written by the authors' scripts/train_voc.py or train_coco.py")
    parser.add_argument("--spec", required=True, help="the ablation spec whose experiment gets the run")
    parser.add_argument("--condition", default="more",
                        help="the spec's condition the authors' run stands for (default: more, the full model)")
    parser.add_argument("--tracking-uri", help="MLflow store: a sqlite path or URL, or http://server (default: "
                                               "$MLFLOW_TRACKING_URI, else work/mlflow/mlflow.db)")


def run(args: argparse.Namespace) -> int:
    from more.tracking.authors_run import import_authors_log

    result = import_authors_log(args.log, args.spec, condition=args.condition, tracking_uri=args.tracking_uri)
    print(result.summary())
    return 0
