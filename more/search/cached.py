"""Search without retraining: the seed threshold over CAM/LAM score maps computed once (MORE_SPEC §5.2).

The maps of the tuning split are computed once through the inference code (:func:`more.eval.seeds.score_maps`, then
:func:`more.eval.seeds.seed_from_maps` at each image's label size) and reduced, per labelled pixel, to what the
seed rule needs: the best present class and its score. A seed is then ``argmax + 1`` where that score is above
``eval.bkg_thre`` and background elsewhere (``≤``, §7), so one trial's confusion matrix is a single vectorized
``bincount`` over every pixel of every image (no per-image loop), and a study runs hundreds of trials a minute.

The reduced maps are cached in ``<out>/cache/<split>-<source>-<key>.npz`` keyed by the checkpoint's digest, the
split, the source, the scales and the pixel stride. After the study, the best threshold and the config's own are
scored on the report split the same way, from its maps at every labelled pixel (:func:`score_thresholds`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Log = Callable[[str], None]


@dataclass
class SeedCache:
    """Every labelled pixel of a split (ignore pixels dropped), flattened over images.

    Attributes:
        best_class: (P,) uint8 class id 1..C of the highest present-class score.
        best_score: (P,) float32 that score (normalised CAM/LAM).
        gt: (P,) uint8 ground-truth class 0..C.
        num_classes: C + 1 (background included).
        num_images: images the pixels come from.
    """

    best_class: np.ndarray
    best_score: np.ndarray
    gt: np.ndarray
    num_classes: int
    num_images: int

    def __post_init__(self) -> None:
        self._gt_rows = self.gt.astype(np.int64) * self.num_classes  # (P,) row offsets of the confusion matrix

    @property
    def num_pixels(self) -> int:
        return int(self.gt.shape[0])

    def confusion(self, bkg_thre: float) -> np.ndarray:
        """(K, K) confusion matrix (rows GT, columns prediction) of the seeds at ``bkg_thre``, all images at once."""
        pred = np.where(self.best_score <= bkg_thre, 0, self.best_class)  # (P,) cam_to_label's "≤" (§7)
        k = self.num_classes
        return np.bincount(self._gt_rows + pred, minlength=k * k).reshape(k, k)

    def miou(self, bkg_thre: float) -> float:
        """mIoU ×100 of the seeds (plain mean over all classes, as in the tables)."""
        from more.eval.metrics import scores

        return 100.0 * scores(self.confusion(bkg_thre)).miou

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        from more.outputs import on_disk_full

        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with on_disk_full(path, what="the search's seed cache", cleanup=[tmp]), os.fdopen(fd, "wb") as fh:
            np.savez(fh, best_class=self.best_class, best_score=self.best_score, gt=self.gt,
                     meta=np.array([self.num_classes, self.num_images]))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SeedCache:
        with np.load(path, allow_pickle=False) as data:
            k, n = (int(v) for v in data["meta"])
            return cls(data["best_class"], data["best_score"], data["gt"], k, n)


def cache_key(*, checkpoint_digest: str, split: str, source: str, scales: list[float], stride: int,
              resize: int, max_images: int) -> str:
    """12 hex digits naming the cache file of one (checkpoint, split, source, scales, stride, resize) combination."""
    text = json.dumps([checkpoint_digest, split, source, list(scales), stride, resize, max_images])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def build_seed_cache(run: Any, dataset: Any, *, source: str, scales: list[float], stride: int = 1,
                     log: Log = print) -> SeedCache:
    """Compute the score maps of ``dataset`` once and reduce them to :class:`SeedCache`.

    Args:
        run: :class:`more.eval.infer.LoadedRun` (model, config, device).
        dataset: an eval dataset (:func:`more.data.build_eval_dataset`) with masks and image labels.
        source: ``cam`` or ``lam``.
        scales: inference scales.
        stride: keep every ``stride``-th pixel in both directions of each label map (1 = all pixels).
    """
    import torch

    from more.config import num_classes
    from more.data import collate_eval
    from more.eval.seeds import score_maps, seed_from_maps

    cfg, device = run.cfg, run.device
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.eval.batch_size, shuffle=False,
                                         num_workers=cfg.data.num_workers, collate_fn=collate_eval)
    k = num_classes(cfg) + 1
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    images, t0 = 0, time.perf_counter()
    with torch.no_grad():
        for batch in loader:
            x = batch["image"].to(device)
            labels = batch["labels"].to(device)  # (B, C) ground-truth image labels
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.autocast):
                maps = score_maps(run.model, x, source=source, scales=scales, lam_mode=cfg.model.lam)  # (B, C, R, R)
            for i in range(x.shape[0]):
                gt = batch["mask"][i].to(device)  # (H, W)
                # bkg_thre=-1 keeps argmax + 1 everywhere: the threshold is applied per trial
                seed = seed_from_maps(maps[i].float(), labels[i], size=tuple(gt.shape), bkg_thre=-1.0)
                value = (seed.scores * labels[i].float()[:, None, None]).amax(dim=0)  # (H, W) as in cam_to_label
                keep = gt[::stride, ::stride] < k  # drops the ignore band (255)
                parts.append((seed.label[::stride, ::stride][keep], value[::stride, ::stride][keep],
                              gt[::stride, ::stride][keep]))
            images += x.shape[0]
    best_class, best_score, gt_all = (torch.cat([p[j] for p in parts]).cpu() for j in range(3))
    log(f"score maps of {images} images ({best_class.numel()} labelled pixels) in {time.perf_counter() - t0:.1f} s")
    return SeedCache(best_class.numpy().astype(np.uint8), best_score.numpy().astype(np.float32),
                     gt_all.numpy().astype(np.uint8), k, images)


def score_thresholds(report: SeedCache, thresholds: dict[str, float], *,
                     tuning: SeedCache | None = None) -> dict[str, dict[str, float]]:
    """Seed mIoU ×100 of named thresholds on the report split (and, given ``tuning``, on the tuning split).

    Args:
        report: the report split's cache.
        thresholds: e.g. ``{"best": 0.41, "default": 0.5}``.
        tuning: the tuning split's cache, for the same numbers where the thresholds were chosen.

    Returns:
        ``{name: {"eval.bkg_thre": t, "miou": report mIoU, "tuning_miou": tuning mIoU}}``.
    """
    out = {}
    for name, value in thresholds.items():
        out[name] = {"eval.bkg_thre": float(value), "miou": report.miou(float(value))}
        if tuning is not None:
            out[name]["tuning_miou"] = tuning.miou(float(value))
    return out


# -------------------------------------------------------------------------------------------- Optuna study


def existing_study(storage: Any, name: str) -> Any | None:
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def finished_trials(study: Any) -> int:
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    return sum(t.state in done for t in study.get_trials(deepcopy=False))


@dataclass
class CachedResult:
    """What a cached study run did."""

    study: Any
    new_trials: int
    seconds: float

    @property
    def trials_per_minute(self) -> float:
        return 60.0 * self.new_trials / self.seconds if self.seconds > 0 else float("inf")


def run_cached_study(spec: Any, cache: SeedCache, *, storage: Any, study_name: str, n_trials: int) -> CachedResult:
    """Run ``n_trials`` more trials of the study (created if missing) maximising the seeds' mIoU on the cache.

    The sampler is ``TPESampler(seed=spec.seed)``; each trial's params come from the spec's define-by-run space.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True,
                                direction="maximize" if spec.mode == "max" else "minimize",
                                sampler=optuna.samplers.TPESampler(seed=spec.seed + finished_trials_or_zero(storage,
                                                                                                           study_name)))

    def objective(trial: optuna.Trial) -> float:
        values = spec.space.sample(trial)
        return cache.miou(float(values["eval.bkg_thre"]))

    t0 = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, gc_after_trial=False)
    return CachedResult(study, n_trials, time.perf_counter() - t0)


def finished_trials_or_zero(storage: Any, study_name: str) -> int:
    """The number of finished trials already in the study: offsets the sampler seed on a resume so a continued
    study does not replay the first run's random start-up points (a fresh study uses ``seed`` itself)."""
    study = existing_study(storage, study_name)
    return finished_trials(study) if study is not None else 0
