"""Benchmark of the vectorized GCR (MORE_SPEC §1.5) against a plain per-(image, class) loop of the same formulas.

VOC shapes: B=4 images, C=20 class tokens, L=784 patch tokens (28x28), D=768, K=10 (reference) or K=392 (paper).
The loop column runs every head separately (one top-k, one gather and one fusion per (b, c)), the way a direct
transcription of Eq. (1)-(5) reads. Both columns share the same module weights and are checked to agree.

Usage: python bench/bench_model.py [--repeat 3] [--threads 0] [--device cpu|cuda] [--backward]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from more.model.gcr import GCR

B, C, L, D = 4, 20, 784, 768


def gcr_loop(gcr: GCR, class_tokens: torch.Tensor, patch_tokens: torch.Tensor) -> torch.Tensor:
    """GCR one head at a time: a Python loop over images and class tokens (reference formulas, §1.5)."""
    rows = []
    for b in range(class_tokens.shape[0]):
        patches = patch_tokens[b].detach()
        tails_in = torch.cat((class_tokens[b], patches)) if gcr.candidates == "classes_and_patches" else patches
        tails = gcr.tail_proj(tails_in)  # (M, D)
        for c in range(class_tokens.shape[1]):
            token = class_tokens[b, c]  # (D,)
            head = gcr.head_proj(token)  # (D,)
            if gcr.similarity == "dot":
                scores = tails @ (head / math.sqrt(head.numel()))  # (M,)
            else:
                scores = F.normalize(tails, dim=-1) @ F.normalize(head, dim=0)
            top, index = scores.topk(min(gcr.top_k, tails.shape[0]))  # (k,)
            rel = top.softmax(0)[:, None]  # (k, 1)  Eq. (1)
            neighbours = tails[index]  # (k, D)  Eq. (2)
            edges = (1 - rel) * head + rel * neighbours  # Eq. (3)
            gate = torch.tanh(head + edges)  # (k, D)
            if gcr.weighting == "sum_product":  # §7.17: the reference's einsum, a product of two sums
                weight = (neighbours.sum(-1) * gate.sum(-1)).softmax(0)
            else:
                weight = (neighbours * gate).sum(-1).softmax(0)  # Eq. (4)
            knowledge = weight @ neighbours  # (D,)
            if gcr.fusion == "reference":
                summed = F.leaky_relu(gcr.linear1(0.1 * (head + knowledge) + token), gcr.negative_slope)
                product = F.leaky_relu(gcr.linear2(0.1 * (head * knowledge) + token), gcr.negative_slope)
                rows.append(gcr.norm(summed + product))
            else:
                rows.append(
                    F.leaky_relu(gcr.linear1(head + knowledge), gcr.negative_slope)
                    + F.leaky_relu(gcr.linear2(knowledge * head), gcr.negative_slope)
                )
    return torch.stack(rows).view_as(class_tokens)


def timed(fn: Callable[[], torch.Tensor], repeat: int, device: torch.device, backward: bool) -> float:
    """Median seconds of ``fn`` (plus a backward pass when asked), after one warm-up call."""

    def once() -> None:
        out = fn()
        if backward:
            out.square().sum().backward()

    once()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        once()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_gcr(*, repeat: int, device: torch.device, backward: bool) -> list[tuple[str, float, float]]:
    """Time vectorized vs loop GCR at VOC shapes for the reference K and the paper's K; returns rows."""
    rows = []
    for name, kwargs in (
        ("reference K=10", {"top_k": 10}),
        (
            "paper K=392 (patches, cosine, Eq. 4, Eq. 5)",
            {"top_k": 392, "candidates": "patches", "similarity": "cosine", "fusion": "paper", "weighting": "dot"},
        ),
    ):
        torch.manual_seed(0)
        gcr = GCR(D, **kwargs).to(device)
        tokens = torch.randn(B, C, D, device=device, requires_grad=backward)
        patches = torch.randn(B, L, D, device=device)
        with torch.no_grad():
            diff = (gcr(tokens, patches) - gcr_loop(gcr, tokens, patches)).abs().max().item()
        grad_mode = torch.enable_grad() if backward else torch.no_grad()
        with grad_mode:
            fast = timed(lambda g=gcr, t=tokens, p=patches: g(t, p), repeat, device, backward)
            slow = timed(lambda g=gcr, t=tokens, p=patches: gcr_loop(g, t, p), repeat, device, backward)
        print(
            f"GCR {name:<38} vectorized {fast * 1e3:9.2f} ms   loop {slow * 1e3:9.2f} ms   "
            f"ratio {slow / fast:6.1f}x   max |diff| {diff:.1e}"
        )
        rows.append((name, fast, slow))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backward", action="store_true", help="time forward + backward instead of forward only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    mode = "forward+backward" if args.backward else "forward"
    print(
        f"GCR at VOC shapes B={B} C={C} L={L} D={D}, {mode}, device {device}, threads {torch.get_num_threads()}, "
        f"median of {args.repeat}"
    )
    bench_gcr(repeat=args.repeat, device=device, backward=args.backward)


if __name__ == "__main__":
    main()
