"""``python -m more search SPEC``: an Optuna study over config keys (``experiments/search_*.yaml``).

* ``kind: cached`` (needs ``--checkpoint``): the seed threshold over the CAM/LAM maps of a tuning split, computed
  once and cached; hundreds of trials a minute on the CPU. Refuses to tune on the split it reports on
  (``report_split``, else the checkpoint's ``eval.split``) unless ``--allow-same-split``; after the study, scores
  the best threshold and the config's own on that split (printed, in ``best.json`` and on the parent MLflow run).
* ``kind: training``: every trial trains, on Ray Tune with ``OptunaSearch`` and ASHA pruning, several at a time.

The study lives in an Optuna journal file in the output folder (or ``--storage`` PATH or RDB URL); ``--resume``
continues it (trial numbers continue). The output folder gets ``trials.csv/.md``, ``importances.csv/.md/.png``,
``best.json`` and ``best.yaml`` (a config overlay for ``python -m more train best.yaml``); MLflow gets a parent run
per study and a child run per trial. Exit status: 0 done, 1 some trials failed, 2 bad spec or arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from more.search.study import DEFAULT_OUT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="a search spec, e.g. experiments/search_seed_thresholds.yaml")
    parser.add_argument("--checkpoint", help="cached searches: the checkpoint whose score maps are searched")
    parser.add_argument("--resume", action="store_true", help="continue the study of this spec (numbering continues)")
    parser.add_argument("--allow-same-split", action="store_true",
                        help="cached searches: allow tuning on the split the results are reported on")
    parser.add_argument("--trials", type=int, help="run N more trials (default: up to the spec's 'trials' in total)")
    parser.add_argument("--storage", help="Optuna storage: a journal file path or an RDB URL "
                                          "(default: <out>/study.journal)")
    parser.add_argument("--out", help=f"output folder (default: {DEFAULT_OUT}/<name>-<hash>)")
    parser.add_argument("--address", help="training searches: HOST:PORT of a Ray cluster (default: a private Ray on "
                                          "127.0.0.2)")
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or the embedded sqlite)")
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    parser.add_argument("--force", action="store_true",
                        help="write --out (or --storage) even where it holds files more did not create or lies "
                             "inside data.root (refused otherwise)")


def run(args: argparse.Namespace) -> int:
    from more.commands.preflight import search_checks
    from more.search.spec import load_search_spec
    from more.search.study import created_paths, remove_if_empty

    spec = load_search_spec(args.spec)  # SpecError -> "spec error: ..." and exit 2 (more.__main__)
    search_checks(spec, args)
    with created_paths() as made:
        code = 2
        try:
            if spec.kind == "cached":
                code = run_cached(spec, args)
            else:
                from more.search.tuned import run_training

                code = run_training(spec, args)
        finally:
            if code == 2:  # stopped on its input (or raised): leave no empty study journal behind
                remove_if_empty(made)
    return code


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_cached(spec, args: argparse.Namespace) -> int:  # noqa: ANN001
    """The cached seed-threshold search (part 1 of the search command), then the best and the config's threshold
    scored on the report split."""
    from more.data import build_eval_dataset, ensure_dataset
    from more.eval.infer import load_run
    from more.outputs import own_dir
    from more.search.cached import cache_key, run_cached_study, score_thresholds
    from more.search.report import log_study, write_outputs
    from more.search.spec import file_digest, search_hash
    from more.search.study import open_study

    if spec.report_split is not None and spec.report_split == spec.tuning_split and not args.allow_same_split:
        print(_same_split_text(spec.tuning_split, "report_split in the spec"), file=sys.stderr)
        return 2
    loaded = load_run(args.checkpoint, spec.overrides)  # CheckpointError -> exit 2 (more.__main__)
    cfg = loaded.cfg
    report_split = spec.report_split or cfg.eval.split
    if report_split == spec.tuning_split and not args.allow_same_split:
        print(_same_split_text(spec.tuning_split, "the checkpoint's eval.split"), file=sys.stderr)
        return 2
    from more.preflight import config_paths

    # both splits are scored: their lists, masks and the labels file, before the study is opened
    config_paths(cfg, weights=False, splits={"tuning_split": spec.tuning_split,
                                             "report_split" if spec.report_split else "eval.split": report_split})
    scales = spec.scales or list(cfg.eval.infer_cam_scales)
    ckpt_digest = file_digest(loaded.checkpoint)
    digest = search_hash(spec, extra={"checkpoint": ckpt_digest, "scales": scales})
    opened = open_study(spec, args, digest, reads={"data.root": cfg.data.root})
    if isinstance(opened, str):
        print(opened, file=sys.stderr)
        return 2
    study_name, out, storage, _, n_trials = opened

    # the tuning split at the spec's pixel stride; the report split at every labelled pixel (its number is reported)
    splits = {"tuning": (spec.tuning_split, spec.stride), "report": (report_split, 1)}

    def cache_file(split: str, stride: int) -> Path:
        key = cache_key(checkpoint_digest=ckpt_digest, split=split, source=spec.source, scales=scales, stride=stride,
                        resize=cfg.eval.resize, max_images=cfg.eval.max_images)
        return out / "cache" / f"{split}-{spec.source}-{key}.npz"

    files = {role: cache_file(split, stride) for role, (split, stride) in splits.items()}
    datasets = {}
    if not all(f.is_file() for f in files.values()):
        ensure_dataset(cfg, progress=_log)
        try:  # both splits before any work: a missing report split fails now, not after the study
            datasets = {role: build_eval_dataset(cfg, split) for role, (split, _) in splits.items()
                        if not files[role].is_file()}
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    def seed_cache(role: str):  # noqa: ANN202 -- SeedCache
        return _seed_cache(files[role], loaded, datasets.get(role), spec=spec, scales=scales,
                           stride=splits[role][1])

    own_dir(out, command="search")  # the score-map cache is its first file
    cache = seed_cache("tuning")
    if spec.path is not None:
        (out / "spec.yaml").write_text(spec.path.read_text())
    _log(f"study {study_name}: {cache.num_images} images of split {spec.tuning_split} ({cache.num_pixels} pixels), "
         f"{spec.source} maps, reporting split {report_split}; {max(n_trials, 0)} new trial(s) -> {out}")
    if n_trials > 0:
        result = run_cached_study(spec, cache, storage=storage, study_name=study_name, n_trials=n_trials)
        study = result.study
        print(f"{result.new_trials} trials in {result.seconds:.2f} s: {result.trials_per_minute:.0f} trials/minute")
    else:
        import optuna

        study = optuna.load_study(study_name=study_name, storage=storage)
        print(f"nothing to run: the study already has {spec.trials} finished trials (--trials N runs N more)")
    from more.config import to_flat

    report = None
    best_trial = _best_trial(study)
    if best_trial is not None:
        held_out = seed_cache("report")
        scores = score_thresholds(held_out, {"best": best_trial.params["eval.bkg_thre"],
                                             "default": cfg.eval.bkg_thre}, tuning=cache)
        report = {"split": report_split, "source": spec.source, "images": held_out.num_images,
                  "pixels": held_out.num_pixels, **scores}
    base = to_flat(cfg)  # the checkpoint's whole config: the overlay rebuilds it exactly, plus the best values
    best = write_outputs(study, out, base=base, title=f"{study_name}: seeds mIoU on {spec.tuning_split}",
                         report=report)
    if not args.no_tracking:
        parent, created = log_study(study, out, spec_name=spec.name, digest=digest,
                                    spec_text=spec.path.read_text() if spec.path else "",
                                    metric=f"search/{spec.tuning_split}/{spec.source}/seeds_miou",
                                    tracking_uri=args.tracking_uri,
                                    parent_metrics=_report_metrics(report, spec.tuning_split) if report else None)
        if parent:
            _log(f"MLflow: parent run {parent}, {created} trial run(s) logged")
    if best:
        values = " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
        print(f"best trial {best['trial']}: mIoU {best['value']:.3f} on {spec.tuning_split} with {values}")
    if report:
        print(report_text(report, spec.tuning_split))
    print(f"results in {out}: trials.csv, trials.md, importances.*, best.json, best.yaml")
    return 0


def _seed_cache(path: Path, loaded: Any, dataset: Any, *, spec: Any, scales: list[float], stride: int) -> Any:
    """The split's :class:`~more.search.cached.SeedCache` from ``path``, else computed from ``dataset`` and saved."""
    from more.search.cached import SeedCache, build_seed_cache

    if path.is_file():
        _log(f"score maps from the cache {path}")
        return SeedCache.load(path)
    cache = build_seed_cache(loaded, dataset, source=spec.source, scales=scales, stride=stride, log=_log)
    cache.save(path)
    return cache


def _best_trial(study: Any) -> Any:
    try:
        return study.best_trial
    except ValueError:  # no complete trial
        return None


def _report_metrics(report: dict[str, Any], tuning_split: str) -> dict[str, float]:
    """The parent run's metrics for the report split: the seeds mIoU of the best and of the config's threshold
    there and on the tuning split, and the two thresholds."""
    key = f"search/{report['split']}/{report['source']}/seeds_miou"
    tuning = f"search/{tuning_split}/{report['source']}/seeds_miou"
    out = {}
    for name in ("best", "default"):
        out[f"{key}_{name}"] = report[name]["miou"]
        out[f"{tuning}_{name}"] = report[name]["tuning_miou"]
        out[f"search/{name}/eval.bkg_thre"] = report[name]["eval.bkg_thre"]
    return out


def report_text(report: dict[str, Any], tuning_split: str) -> str:
    """Two lines: the best and the config's threshold with their seeds mIoU on the report and the tuning split."""
    lines = [f"seeds mIoU on the report split {report['split']} ({report['images']} images, {report['pixels']} "
             f"pixels, {report['source']} maps):"]
    for name, label in (("best", "best threshold   "), ("default", "config threshold ")):
        r = report[name]
        lines.append(f"  {label} eval.bkg_thre={r['eval.bkg_thre']:.6g}: {r['miou']:.3f} on {report['split']} "
                     f"({r['tuning_miou']:.3f} on {tuning_split})")
    return "\n".join(lines)


def _same_split_text(split: str, why: str) -> str:
    return (f"refusing: the tuning split '{split}' is the split results are reported on ({why}); tuning there "
            f"overfits the reported number. Use another tuning_split, or pass --allow-same-split")
