"""CPU benchmark of the vectorized losses against the reference's loop implementations (MORE_SPEC §8.1-8.3, §8.6).

VOC shapes: B=4, 28x28 patch tokens, D=768, C=20; the energy loss on a 224x224 grid with K=21. Each "loop" column is
written here after the reference code (model/losses.py, utils/camutils.py): per-position window slices with a host
sync each, per-class loops, per-image boolean writes. The reference's energy loss runs a C++ permutohedral lattice on
the CPU that is not available here; its stand-in is a naive per-pixel loop over the exact kernel, run on a smaller grid
(``--energy-loop-grid``) because the full 224x224 loop takes minutes.

Usage: python bench/bench_losses.py [--repeat 5] [--threads 1] [--device cuda]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from more.losses import bilateral_features, bilateral_filter, cre_loss, energy_loss, ptc_affinity_mask, ure_loss
from more.model.more import tokens_to_map

TARGETS = {"L_ure": 50.0, "L_cre": 5.0, "PTC mask": 10.0}


# ---------------------------------------------------------------------------------------------------------------
# Reference-style loop implementations
# ---------------------------------------------------------------------------------------------------------------


def cre_loop(tokens, features, masks, labels, temperature):
    """``CRELoss_neg``: loops over images and present classes, ``.tolist()`` and a ``sum() != 0`` sync per class."""
    b = masks.shape[0]
    q = F.normalize(tokens, p=2, dim=2, eps=1e-8)
    p = features.detach().clone()
    logits = torch.exp(torch.matmul(q, p.reshape(b, p.shape[1], -1)) / temperature)
    total = 0
    for i in range(b):
        per_image = 0
        for idx in torch.where(labels[i] == 1)[0].tolist():
            logit = logits[i, idx, :]
            if logit.sum() != 0:
                loss = -torch.log(logit / (logit.sum() + 1e-4))
            else:
                loss = -torch.log(1 / (1 + logit.sum() + 1e-4))
            flag = (masks[i] == idx + 1).flatten()
            per_image += (flag * loss).sum() / (flag.sum() + 1e-4)
        total = total + per_image
    return total / b


def ure_loop(tokens, features, masks, labels, crop_num=8, kernel_size=6):
    """``URELoss_neg`` with ``uncertain_kernel_search``: a Python ``if`` on a tensor per uncertain position."""
    patch = F.normalize(features, p=2, dim=1, eps=1e-8)
    cls = F.normalize(tokens, p=2, dim=2, eps=1e-8).detach()
    roi = torch.zeros_like(masks, dtype=torch.int16)
    clean = masks.clone()
    clean[clean == 255] = 0
    roi[masks == 255] = 1
    roi[clean >= 1] = 2
    b, _, h, w = patch.shape
    margin = kernel_size // 2
    selected = []
    for i1 in range(b):
        tokens_i = []
        index = (roi[i1, margin : h - margin, margin : w - margin] == 1).nonzero()
        for i2 in range(index.shape[0]):
            h0, w0 = index[i2, 0], index[i2, 1]
            window = roi[i1, h0 : h0 + kernel_size, w0 : w0 + kernel_size]
            if window.sum() / (kernel_size * kernel_size) >= 1.2:
                tokens_i.append(patch[i1, :, h0, w0])
        if len(tokens_i) > crop_num:
            tokens_i = torch.stack(tokens_i)[torch.randperm(len(tokens_i))[:crop_num]]
        else:
            add = (crop_num - len(tokens_i)) // 4
            pos = (roi[i1, margin : h - margin, margin : w - margin] == 2).nonzero()
            if pos.shape[0] < add:
                pos = (roi[i1, margin : h - margin, margin : w - margin] >= 0).nonzero()
            pos = pos[torch.randperm(pos.shape[0])[:add]]
            for ip in range(pos.shape[0]):
                tokens_i.append(patch[i1, :, pos[ip, 0], pos[ip, 1]])
            tokens_i = torch.stack(tokens_i)
        selected.append(tokens_i)
    negative = labels == 0
    total, n = 0, 0
    for idx, tokens_i in enumerate(selected):
        for u in tokens_i:
            sim = torch.matmul(u, cls[idx].transpose(1, 0)).abs()
            total += 0.5 * (1 - torch.sum(labels[idx] * sim) / (labels[idx].sum() + 1)) + 0.5 * torch.sum(
                negative[idx] * sim
            ) / (negative[idx].sum() + 1)
            n += 1
    return total / n


def aff_mask_loop(cam_label, ignore_index=255):
    """``label_to_aff_mask``: int64 repeat/permute and per-image boolean writes."""
    b, h, w = cam_label.shape
    rep = cam_label.reshape(b, 1, -1).repeat([1, h * w, 1])
    aff = (rep == rep.permute(0, 2, 1)).type(torch.long)
    for i in range(b):
        aff[i, :, rep[i, 0, :] == ignore_index] = ignore_index
        aff[i, rep[i, 0, :] == ignore_index, :] = ignore_index
    aff[:, range(h * w), range(h * w)] = ignore_index
    return aff


def filter_row_loop(features, maps):
    """Naive exact bilateral filter: one kernel row per query pixel."""
    b, k, h, w = maps.shape
    f = features.flatten(2)  # (B, F, N)
    s = maps.flatten(2)  # (B, K, N)
    out = torch.empty_like(s)
    for n in range(b):
        for i in range(h * w):
            row = torch.exp(-0.5 * ((f[n] - f[n, :, i : i + 1]) ** 2).sum(0))  # (N,)
            out[n, :, i] = s[n] @ row
    return out.reshape(b, k, h, w)


# ---------------------------------------------------------------------------------------------------------------
# Inputs and timing
# ---------------------------------------------------------------------------------------------------------------


def voc_like_masks(b: int, c: int, size: int, generator: torch.Generator, high: float, low: float):
    """CAM-like 3-valued masks: smooth random maps for 1-3 present classes, thresholded like ``cam_to_label``."""
    labels = torch.zeros(b, c)
    for i in range(b):
        labels[i, torch.randperm(c, generator=generator)[: 1 + i % 3]] = 1.0
    cams = F.interpolate(torch.rand(b, c, 5, 5, generator=generator), size=(size, size), mode="bicubic")
    cams = cams * labels[:, :, None, None]
    cams = (cams - cams.amin((2, 3), keepdim=True)) / (cams.amax((2, 3), keepdim=True) + 1e-5)
    value, index = cams.max(dim=1)
    masks = index + 1
    masks[value <= high] = 255
    masks[value <= low] = 0
    return masks, labels


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], repeat: int, warmup: bool = True) -> float:
    """Best wall time in seconds of ``repeat`` calls (robust to other load), after one warm-up call by default.
    CUDA work is synchronised before and after each call."""
    if warmup:
        fn()
    times = []
    for _ in range(repeat):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return min(times)


def backward_of(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    return lambda: fn().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per entry (the best is reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (0 = leave torch's default)")
    parser.add_argument(
        "--energy-batch", type=int, default=1, help="images for the 224x224 energy loss (0 = skip; ~30 s/image/core)"
    )
    parser.add_argument("--energy-loop-grid", type=int, default=40, help="grid side for the loop-vs-tiled filter")
    parser.add_argument("--tile", type=int, default=2048, help="query rows per tile of the exact bilateral filter")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where both versions run")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    b, c, d, size = 4, 20, 768, 28
    tokens = torch.randn(b, c, d, generator=generator).to(device).requires_grad_(True)
    # the model's layout: (B, L, D) patch tokens viewed as a (B, D, h, w) map (more.model.more.tokens_to_map)
    patch_tokens = torch.randn(b, size * size, d, generator=generator).to(device).requires_grad_(True)
    features = tokens_to_map(patch_tokens, (size, size))
    cre_masks, labels = voc_like_masks(b, c, size, generator, high=0.5, low=0.25)
    aux_masks, _ = voc_like_masks(b, c, size, generator, high=0.7, low=0.25)
    aux_masks = torch.where(labels.sum(1)[:, None, None] > 0, aux_masks, 0).to(device)
    cre_masks, labels = cre_masks.to(device), labels.to(device)

    rows: list[tuple[str, float, float, str]] = []

    def compare(name: str, vectorized: Callable[[], object], loop: Callable[[], object], note: str = "") -> None:
        rows.append((name, timed(loop, args.repeat), timed(vectorized, args.repeat), note))

    ure_args = dict(tokens=tokens, features=features, mask=aux_masks, labels=labels)
    cre_args = dict(tokens=tokens, features=features, mask=cre_masks, labels=labels, temperature=0.5)
    ure_fn = lambda: ure_loss(**ure_args)  # noqa: E731
    ure_ref = lambda: ure_loop(tokens, features, aux_masks, labels)  # noqa: E731
    cre_fn = lambda: cre_loss(**cre_args, classes="present")  # noqa: E731
    cre_ref = lambda: cre_loop(tokens, features, cre_masks, labels, 0.5)  # noqa: E731
    with torch.no_grad():
        compare("L_ure", ure_fn, ure_ref, "forward")
        compare("L_cre", cre_fn, cre_ref, "forward; classes=present: present-class rows only (the CPU default)")
        compare(
            "L_cre all rows",
            lambda: cre_loss(**cre_args, classes="all"),
            cre_ref,
            "forward; every class row, no host read (the GPU default): the same matmul as the loop",
        )
    small_tokens, small_features = tokens.detach()[:, :, :8], features.detach()[:, :8]
    with torch.no_grad():
        compare(
            "L_cre D=8",
            lambda: cre_loss(**dict(cre_args, tokens=small_tokens, features=small_features), classes="all"),
            lambda: cre_loop(small_tokens, small_features, cre_masks, labels, 0.5),
            "forward, all rows; D=8 makes the (B,C,D)x(B,D,L) matmul negligible: the per-class loop overhead",
        )
    compare("L_ure fwd+bwd", backward_of(ure_fn), backward_of(ure_ref))
    compare("L_cre fwd+bwd", backward_of(cre_fn), backward_of(cre_ref), "classes=present")
    compare("PTC mask", lambda: ptc_affinity_mask(aux_masks), lambda: aff_mask_loop(aux_masks), "(4, 784, 784)")

    side = args.energy_loop_grid
    image = (torch.rand(1, 3, side, side, generator=generator) * 255).to(device)
    probs = torch.rand(1, 21, side, side, generator=generator).softmax(1).to(device)
    feats = bilateral_features(image, sigma_rgb=15.0, sigma_xy=50.0)
    tiled = bilateral_filter(features=feats, maps=probs, tile=args.tile)
    error = ((tiled - filter_row_loop(feats, probs)).abs().max() / tiled.abs().max()).item()
    compare(
        f"bilateral {side}x{side}",
        lambda: bilateral_filter(features=feats, maps=probs, tile=args.tile),
        lambda: filter_row_loop(feats, probs),
        f"1 image, K=21, max rel diff {error:.1e}",
    )

    eb = args.energy_batch
    if eb > 0:
        seg_logits = torch.randn(eb, 21, 28, 28, generator=generator).to(device).requires_grad_(True)
        big_image = (torch.rand(eb, 3, 448, 448, generator=generator) * 255).to(device)
        target = torch.randint(0, 21, (eb, 448, 448), generator=generator).to(device)
        energy_fn = lambda: energy_loss(  # noqa: E731
            seg_logits=seg_logits, image=big_image, target=target, filter="exact", tile=args.tile
        )
        energy_time = timed(backward_of(energy_fn), 1, warmup=False)

    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, best of {args.repeat} calls")
    print(f"{'entry':<22}{'loop [ms]':>12}{'vectorized [ms]':>17}{'speed-up':>10}{'target':>9}  note")
    for name, loop_time, fast_time, note in rows:
        target = TARGETS.get(name)
        target_text = f">={target:.0f}x" if target else ""
        print(
            f"{name:<22}{loop_time * 1e3:>12.2f}{fast_time * 1e3:>17.2f}{loop_time / fast_time:>9.1f}x{target_text:>9}"
            f"  {note}"
        )
    if eb > 0:
        print(
            f"{'energy 224x224 K=21':<22}{'-':>12}{energy_time * 1e3:>17.1f}{'-':>10}{'':>9}  "
            f"B={eb}, one fwd+bwd call from 28x28 logits and a 448x448 image, tile {args.tile}; "
            "no loop timed at this size (a per-pixel loop over 50176 pixels takes minutes)"
        )


if __name__ == "__main__":
    main()
