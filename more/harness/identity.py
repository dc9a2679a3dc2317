"""Content keys of trials: a hash of what decides a trial's result, so a grown spec can reuse what already ran.

A trial's key covers its resolved config minus runtime-only fields (output folders, thread and worker counts,
device, picture count, checkpoint retention), with the dataset root and the weights path replaced by identities of
what they hold, the rules that stop it besides ``iter`` (a metric threshold, the ASHA scheduler) and the code
identity (the commit, plus a hash of the uncommitted changes under ``more/`` when the tree is dirty). The iteration
a trial is stopped at is not in the key: a trial that finished at fewer iterations can continue from its checkpoint.

- :func:`config_key`: everything but the code; :func:`content_key`: ``config_key`` + code identity.
- Dataset identity: the split list files' contents and a cheap fingerprint of the tree (relative path and size of
  every file); a synthetic set is identified by its generator options (the same before and after generation); a
  custom dataset by its ``dataset.yaml``, list files and labels file contents and the fingerprints of its image and
  mask folders.
- Weights identity: size + sha256 of the file, the hash cached by (path, size, mtime) in ``~/.cache/more``.

Kept free of torch and ray: the driver, ``ablate --dry-run`` and ``status`` compute keys without the trainer.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from more.config import MoReConfig
from more.config.load import to_flat

CODE_ID_ENV = "MORE_CODE_ID"  # overrides the code identity (e.g. an installed build without a git checkout)
IDENTITY_FILE = "identity.json"  # written to each trial's run folder
# Fields that change where or how fast a trial runs, never what it computes (training resumes exactly, so the
# checkpoint cadence does not change results either).
RUNTIME_KEYS = frozenset({
    "name", "runtime.out_dir", "runtime.run_name", "runtime.device", "runtime.num_threads", "data.num_workers",
    "data.synth_generate", "eval.crf_workers", "eval.num_vis", "train.keep_ckpts", "train.ckpt_every",
})
PATH_KEYS = ("data.root", "data.labels_file", "model.pretrained")  # replaced by identities of their contents
# Keys added after trials were first tracked, left out while at these defaults (which compute what the code did
# before them), so that earlier trials keep their config keys (``--reuse-across-commits`` matches on those).
LATER_KEYS = {"train.accum_steps": 1, "train.val_subset": "", "train.final_full_val": False}
_KEY_CHARS = 16


@dataclass(frozen=True)
class TrialIdentity:
    """What identifies one trial's result.

    Attributes:
        key: the content key (config key + code identity), 16 hex digits.
        config_key: the key without the code identity (``--reuse-across-commits`` matches on it).
        code: the code identity (``<commit>`` or ``<commit>+dirty.<hash>``).
        target_iters: the iteration the spec stops the trial at (``min(train.max_iters, stop.iter)``).
    """

    key: str
    config_key: str
    code: str
    target_iters: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def code_identity(root: str | os.PathLike | None = None) -> str:
    """``<commit>`` of the checkout holding this package, ``<commit>+dirty.<hash>`` when files under ``more/`` differ
    from it (the hash covers the diff and the untracked files there, so two different dirty trees never match);
    ``$MORE_CODE_ID`` wins; ``unknown`` outside a git checkout."""
    if os.environ.get(CODE_ID_ENV):
        return os.environ[CODE_ID_ENV]
    repo = Path(root) if root else Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=repo, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.decode(errors="replace") if out.returncode == 0 else None

    sha = (git("rev-parse", "HEAD") or "").strip()
    if not sha:
        return "unknown"
    status = git("status", "--porcelain", "--", "more")
    if not status:
        return sha
    digest = hashlib.sha256((git("diff", "HEAD", "--", "more") or "").encode())
    for line in sorted(status.splitlines()):
        if line.startswith("??"):
            path = repo / line[3:].strip()
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for f in files:
                digest.update(str(f.relative_to(repo)).encode() + b"\0" + f.read_bytes())
    return f"{sha}+dirty.{digest.hexdigest()[:12]}"


# --------------------------------------------------------------------------------------------- file contents


def _cache_file() -> Path:
    from more.outputs import user_cache_dir

    return user_cache_dir() / "file_hashes.json"


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """``{size, sha256}`` of a file; the hash is cached by (absolute path, size, mtime) so big weights are read once."""
    p = Path(path).expanduser().resolve()
    st = p.stat()
    stamp = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    cache = _cache_file()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if stamp not in known:
        h = hashlib.sha256()
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        known = {k: v for k, v in known.items() if not k.startswith(f"{p}|")}
        known[stamp] = h.hexdigest()
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known, indent=0))
            os.replace(tmp, cache)
        except OSError:  # a read-only home only costs re-hashing next time
            pass
    return {"size": st.st_size, "sha256": known[stamp]}


def tree_fingerprint(root: str | os.PathLike, *, skip: tuple[str, ...] = (".more_cache",)) -> str:
    """sha256 over the relative path and size of every file under ``root`` (no file is read)."""
    root = Path(root)
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        rel = os.path.relpath(folder, root)
        for name in sorted(files):
            try:
                size = os.stat(os.path.join(folder, name)).st_size
            except OSError:
                continue
            entries.append(f"{rel}/{name}\0{size}")
    return _sha("\n".join(entries))


def _memoised(memo: dict | None, key: tuple, compute: Callable[[], Any]) -> Any:
    """``compute()``, once per ``key`` within one ``memo`` (the trials of a spec share their dataset and weights)."""
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def dataset_identity(cfg: MoReConfig, *, memo: dict | None = None) -> dict[str, Any]:
    """What the dataset at ``data.root`` holds (see the module docstring); the path itself is not part of it.
    ``memo`` keeps the tree's fingerprint across the calls for one spec, so its files are listed once."""
    if cfg.data.dataset == "synthetic":
        from more.data.synth import META_FILE, SynthOptions

        options = asdict(SynthOptions.from_config(cfg))
        meta_path = Path(cfg.data.root) / META_FILE
        if meta_path.is_file():  # an existing set is used as generated, whatever the config's synth_* say
            meta = json.loads(meta_path.read_text())
            options = {k: meta.get(k) for k in options}
        options.pop("test", None)
        return {"synthetic": options}
    if cfg.data.dataset == "custom":  # its images, masks and labels may live outside data.root
        from more.data.description import description_identity

        return {"custom": description_identity(
            cfg.data.root, lambda p: _memoised(memo, ("tree", str(p.resolve())), lambda: tree_fingerprint(p)))}
    from more.data.layout import split_files

    root = Path(cfg.data.root)
    lists = {}
    # train.val_subset's list decides what training validates on when it exists (None when absent: no subset)
    for split in dict.fromkeys(s for s in (cfg.data.train_split, cfg.data.val_split, cfg.eval.split,
                                           cfg.train.val_subset) if s):
        f = split_files(root, cfg.data.dataset, split).list_file
        lists[split] = _sha(f.read_bytes()) if f.is_file() else None
    tree = _memoised(memo, ("tree", str(root.resolve())), lambda: tree_fingerprint(root)) if root.is_dir() else None
    return {"lists": lists, "tree": tree}


def weights_identity(value: str, *, memo: dict | None = None) -> Any:
    """A local weights file by its size and hash; a hub tag (or ``""``, random init) as it is."""
    if value and Path(value).expanduser().is_file():
        return _memoised(memo, ("file", value), lambda: file_identity(value))
    return value


# ------------------------------------------------------------------------------------------------- keys


def target_iters(cfg: MoReConfig, stop: dict[str, float]) -> int:
    """The iteration a trial ends at: ``train.max_iters``, or the spec's ``stop.iter`` when that comes first."""
    if "iter" in stop:
        return min(cfg.train.max_iters, int(stop["iter"]))
    return cfg.train.max_iters


def identity_payload(cfg: MoReConfig, *, stop: dict[str, float], scheduler: dict[str, Any] | None,
                     metric: str, mode: str, memo: dict | None = None) -> dict[str, Any]:
    """The canonical content behind :func:`config_key` (useful to see why two keys differ); ``memo`` shares the
    dataset and file identities between the trials of one spec."""
    flat = {k: v for k, v in to_flat(cfg).items()
            if k not in RUNTIME_KEYS and k not in PATH_KEYS and not (k in LATER_KEYS and LATER_KEYS[k] == v)}
    labels = cfg.data.labels_file
    rules = {k: v for k, v in stop.items() if k != "iter"}
    return {
        "config": flat,
        "data": dataset_identity(cfg, memo=memo),
        "labels_file": (_memoised(memo, ("file", labels), lambda: file_identity(labels))
                        if labels and Path(labels).is_file() else labels),
        "weights": weights_identity(cfg.model.pretrained, memo=memo),
        "seed": cfg.train.seed,
        # a metric threshold or the ASHA scheduler can end a trial early; the metric/mode decide what they compare
        "stop_rules": ({"rules": rules, "metric": metric, "mode": mode} if rules or scheduler else {}),
        "scheduler": scheduler,
    }


def config_key(payload: dict[str, Any]) -> str:
    return _sha(json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str))[:_KEY_CHARS]


def content_key(config_key_: str, code: str) -> str:
    return _sha(f"{config_key_}|{code}")[:_KEY_CHARS]


def trial_identity(cfg: MoReConfig, *, stop: dict[str, float], scheduler: dict[str, Any] | None, metric: str,
                   mode: str, code: str, memo: dict | None = None) -> TrialIdentity:
    """The identity of a trial with config ``cfg`` under a spec's stop rule and scheduler, at code ``code``."""
    ck = config_key(identity_payload(cfg, stop=stop, scheduler=scheduler, metric=metric, mode=mode, memo=memo))
    return TrialIdentity(content_key(ck, code), ck, code, target_iters(cfg, stop))


def spec_identities(spec: Any, trials: list[Any], *, code: str | None = None) -> dict[str, TrialIdentity]:
    """``{trial name: identity}`` for every trial of an expanded spec (see :func:`more.harness.spec.expand`)."""
    from more.harness.spec import trial_config

    code = code or code_identity()
    memo: dict = {}
    return {t.name: trial_identity(trial_config(spec, t), stop=spec.stop, scheduler=spec.scheduler,
                                   metric=spec.metric, mode=spec.mode, code=code, memo=memo) for t in trials}
