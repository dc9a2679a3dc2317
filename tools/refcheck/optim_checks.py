"""The optimizer: parameter groups, every group's lr over the VOC run (and past it), AdamW across the seg warm-up.

The reference side is built by its own ``engine/optimizer_engine.build_optimizer`` from ``scripts/train_voc.py``'s
default arguments; ours as the trainer builds it (``MoRe.param_groups`` + ``PolyWarmupAdamW`` from the config).
"""

from __future__ import annotations

import torch

from more.config import load_config
from more.losses import total_loss
from more.train.optim import PolyWarmupAdamW
from tools.refcheck.build import REFERENCE_ONLY, SIZES, paired, ref_name, voc_args
from tools.refcheck.common import Reference, Row, approx, exact


def _group_rows(ref: Reference) -> list[Row]:
    ours, theirs = paired(ref, SIZES["micro"])
    cfg = load_config(None)
    groups = ours.param_groups(lr=cfg.optim.lr, head_lr_mult=cfg.optim.head_lr_mult,
                               weight_decay=cfg.optim.weight_decay)
    names = {id(p): n for n, p in ours.named_parameters()}
    ref_names = {id(p): n for n, p in theirs.named_parameters()}
    optim = ref.optimizer_engine.build_optimizer(voc_args(ref), theirs.get_param_groups())
    rows = []
    for i, (mine, theirs_group) in enumerate(zip(groups, optim.param_groups)):
        a = sorted(ref_name(names[id(p)]) for p in mine["params"])
        b = sorted(n for n in (ref_names[id(p)] for p in theirs_group["params"]) if n not in REFERENCE_ONLY)
        same = a == b
        note = f"{len(a)} tensors"
        if not same:
            note = f"ours-only {sorted(set(a) - set(b))}; ref-only {sorted(set(b) - set(a))}"[:200]
        rows.append(Row(f"optimizer group {i} ({mine['name']}): members", 0.0 if same else 1.0, 0.0 if same else 1.0,
                        same, note))
    hyper = [(g["lr"], g["weight_decay"]) for g in groups]
    ref_hyper = [(g["lr"], g["weight_decay"]) for g in optim.param_groups]
    rows.append(approx("optimizer groups: base lr and weight decay", torch.tensor(hyper, dtype=torch.float64),
                       torch.tensor(ref_hyper, dtype=torch.float64), tol=1e-12))
    d = optim.defaults
    rows.append(approx("optimizer: betas, eps", torch.tensor([cfg.optim.beta1, cfg.optim.beta2, cfg.optim.eps]),
                       torch.tensor([*d["betas"], d["eps"]]), tol=0.0))
    return rows


def _lr_rows(ref: Reference) -> list[Row]:
    """lr of every group before each of 20005 steps (tiny parameters: AdamW itself is checked below)."""
    cfg = load_config(None)
    args = voc_args(ref)
    mult = [1, 1, cfg.optim.head_lr_mult, cfg.optim.head_lr_mult, cfg.optim.head_lr_mult]
    ours_params = [torch.nn.Parameter(torch.zeros(1)) for _ in mult]
    ref_params = [torch.nn.Parameter(torch.zeros(1)) for _ in mult]
    ours = PolyWarmupAdamW([{"params": [p], "lr": cfg.optim.lr * m, "weight_decay": cfg.optim.weight_decay}
                            for p, m in zip(ours_params, mult)], cfg=cfg.optim, max_iters=cfg.train.max_iters)
    theirs = ref.optimizer_engine.build_optimizer(args, [[p] for p in ref_params])
    steps = args.max_iters + 5
    a, b = torch.empty(steps, len(mult), dtype=torch.float64), torch.empty(steps, len(mult), dtype=torch.float64)
    for t in range(steps):
        ours.step()
        theirs.step()
        a[t] = torch.tensor([g["lr"] for g in ours.param_groups], dtype=torch.float64)
        b[t] = torch.tensor([g["lr"] for g in theirs.param_groups], dtype=torch.float64)
    n = args.max_iters
    return [approx(f"lr schedule, 5 groups, steps 0..{n - 1}", a[:n], b[:n], tol=1e-12),
            approx(f"lr past max_iters (steps {n}..{steps - 1})", a[n:], b[n:], tol=1e-12)]


def _adamw_rows(ref: Reference) -> list[Row]:
    """Six AdamW steps from identical weights and gradients, the seg warm-up ending after step 2 (``n <= 2``).

    The gradients come from one backward on our side and are copied to the reference's parameters, so the rows test
    the optimizers alone (a forward's rounding noise would otherwise be amplified by Adam's normalisation). During
    the warm-up the reference's ``0.0 * seg`` gives the decoder zero gradients; ours leaves the term out and the
    optimizer's ``idle_params`` supplies the zeros.
    """
    warm = 2
    ours, theirs = paired(ref, SIZES["micro"])
    cfg = load_config(None, ["optim.warmup_iters=2", "train.max_iters=6"])
    o_opt = PolyWarmupAdamW(ours.param_groups(lr=1e-3, head_lr_mult=10.0, weight_decay=0.01), cfg=cfg.optim,
                            max_iters=6)
    r_opt = ref.optimizer_engine.build_optimizer(voc_args(ref, lr=1e-3, warmup_iters=2, max_iters=6),
                                                 theirs.get_param_groups())
    g = torch.Generator().manual_seed(21)
    x = torch.randn(2, 3, 64, 64, generator=g)
    ref_params = dict(theirs.named_parameters())
    rows = []
    for n in range(6):
        o = ours(x)
        w = [torch.randn(t.shape, generator=g) for t in (o.cls_logits, o.tokens, o.seg_logits)]
        terms = {"cls": (w[0] * o.cls_logits).sum(), "tokens": (w[1] * o.tokens).sum(),
                 "seg": (w[2] * o.seg_logits).sum()}
        ours_loss = total_loss(terms=terms, weights={"cls": 1.0, "tokens": 1.0, "seg": 0.0 if n <= warm else 1.0})
        o_opt.zero_grad(set_to_none=True)
        ours_loss.total.backward()
        r_opt.zero_grad()
        for name, param in ours.named_parameters():  # the reference's gradients: ours, zeros where ours has none
            ref_params[ref_name(name)].grad = torch.zeros_like(param) if param.grad is None else param.grad.clone()
        o_opt.step()
        r_opt.step()
        ours_w = {k: p.detach() for k, p in ours.named_parameters()}
        rows.append(approx(f"AdamW step n={n} ({'seg warm-up' if n <= warm else 'seg on'}): all weights after",
                           [ours_w[k] for k in ours_w], [ref_params[ref_name(k)].detach() for k in ours_w],
                           tol=1e-6))
    steps = [o_opt.state[p]["step"] for p in ours.decoder.parameters()]
    ref_steps = [r_opt.state[ref_params[ref_name("decoder." + k)]]["step"] for k, _ in ours.decoder.named_parameters()]
    rows.append(exact("AdamW decoder step counts after the warm-up", torch.stack([torch.as_tensor(s) for s in steps]),
                      torch.stack([torch.as_tensor(s) for s in ref_steps])))
    return rows


def checks(ref: Reference) -> list[Row]:
    """Rows for the optimizer."""
    return _group_rows(ref) + _lr_rows(ref) + _adamw_rows(ref)
