"""``python -m more search SPEC``: an Optuna study over config keys (``experiments/search_*.yaml``).

* ``kind: cached`` (needs ``--checkpoint``): the seed threshold over the CAM/LAM maps of a tuning split, computed
  once and cached; hundreds of trials a minute on the CPU. Refuses to tune on the split it reports on
  (``report_split``, else the checkpoint's ``eval.split``) unless ``--allow-same-split``.
* ``kind: training``: every trial trains, on Ray Tune with ``OptunaSearch`` and ASHA pruning, several at a time.

The study lives in an Optuna journal file in the output folder (or ``--storage`` PATH or RDB URL); ``--resume``
continues it (trial numbers continue). The output folder gets ``trials.csv/.md``, ``importances.csv/.md/.png``,
``best.json`` and ``best.yaml`` (a config overlay for ``python -m more train best.yaml``); MLflow gets a parent run
per study and a child run per trial. Exit status: 0 done, 1 some trials failed, 2 bad spec or arguments.
"""

from __future__ import annotations

import argparse
import sys

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
    """The cached seed-threshold search (part 1 of the search command)."""
    from more.data import build_eval_dataset, ensure_dataset
    from more.eval.infer import load_run
    from more.search.cached import SeedCache, build_seed_cache, cache_key, run_cached_study
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
    scales = spec.scales or list(cfg.eval.infer_cam_scales)
    ckpt_digest = file_digest(loaded.checkpoint)
    digest = search_hash(spec, extra={"checkpoint": ckpt_digest, "scales": scales})
    opened = open_study(spec, args, digest)
    if isinstance(opened, str):
        print(opened, file=sys.stderr)
        return 2
    study_name, out, storage, _, n_trials = opened

    key = cache_key(checkpoint_digest=ckpt_digest, split=spec.tuning_split, source=spec.source, scales=scales,
                    stride=spec.stride, resize=cfg.eval.resize, max_images=cfg.eval.max_images)
    cache_file = out / "cache" / f"{spec.tuning_split}-{spec.source}-{key}.npz"
    if cache_file.is_file():
        cache = SeedCache.load(cache_file)
        _log(f"score maps from the cache {cache_file}")
    else:
        ensure_dataset(cfg, progress=_log)
        try:
            dataset = build_eval_dataset(cfg, spec.tuning_split)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        cache = build_seed_cache(loaded, dataset, source=spec.source, scales=scales, stride=spec.stride, log=_log)
        cache.save(cache_file)
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

    base = to_flat(cfg)  # the checkpoint's whole config: the overlay rebuilds it exactly, plus the best values
    best = write_outputs(study, out, base=base, title=f"{study_name}: seeds mIoU on {spec.tuning_split}")
    if not args.no_tracking:
        parent, created = log_study(study, out, spec_name=spec.name, digest=digest,
                                    spec_text=spec.path.read_text() if spec.path else "",
                                    metric=f"search/{spec.tuning_split}/{spec.source}/seeds_miou",
                                    tracking_uri=args.tracking_uri)
        if parent:
            _log(f"MLflow: parent run {parent}, {created} trial run(s) logged")
    if best:
        values = " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
        print(f"best trial {best['trial']}: mIoU {best['value']:.3f} on {spec.tuning_split} with {values}")
    print(f"results in {out}: trials.csv, trials.md, importances.*, best.yaml")
    return 0


def _same_split_text(split: str, why: str) -> str:
    return (f"refusing: the tuning split '{split}' is the split results are reported on ({why}); tuning there "
            f"overfits the reported number. Use another tuning_split, or pass --allow-same-split")
