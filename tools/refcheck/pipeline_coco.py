"""The COCO recipe: ``scripts/train_coco.py`` read at run time against our ``coco`` preset (MORE_SPEC §2.8, §5.6).

The training loop of the reference is one function body that needs CUDA and a process group, so it is not run.
Its source is parsed instead (``ast``) and its own expressions are evaluated with the script's argument defaults:

* the ``if n_iter <= ...`` chain that builds ``loss`` is compiled and run with each loss variable set to a basis
  vector, which gives every term's weight at any iteration n; ours is :func:`more.train.step.loss_weights`;
* the ``mask_cle`` / ``mask_une`` conditional expressions give the mask switch;
* the keyword arguments of every ``cam_to_label``, ``refine_cams_with_bkg_v2``, ``multi_scale_cam2``,
  ``CRELoss_neg``, ``DenseEnergyLoss`` and ``PAR`` call give thresholds, scales, τ and constants;
* the reference's ``PolyWarmupAdamW`` is stepped for the lr schedule over 80000 iterations;
* a reduced-width reference ``MATformer`` with ``num_attri`` tokens counts the class tokens it returns (GCR's K).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any

import numpy as np
import torch

from more.config import MoReConfig, load_config, num_classes, resolved_top_k
from more.train.optim import PolyWarmupAdamW
from more.train.step import loss_weights
from tools.refcheck.common import Row, compare

# the reference's loss variables -> our term names (more.train.step.TERMS)
TERM_OF = {"cls_loss": "cls", "cls_loss_aux": "cls_aux", "attri_loss": "mct", "ptc_loss": "ptc", "cle_loss": "cre",
           "une_loss": "ure", "seg_loss": "seg", "reg_loss": "energy"}
ITERATIONS = (0, 1, 7999, 8000, 8001, 11999, 12000, 12001, 15999, 16000, 16001, 49999, 50000, 50001, 79999)
LR_STEPS = (0, 1, 200, 1499, 1500, 1600, 10000, 40000, 79998, 79999)


def _loop(source: str) -> ast.For:
    tree = ast.parse(textwrap.dedent(source))
    for node in ast.walk(tree):
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name) and node.target.id == "n_iter":
            return node
    raise ValueError("scripts/train_coco.py: no 'for n_iter in ...' loop in train()")


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        f = node.func
        return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
    return None


def _kwargs(call: ast.Call, env: dict[str, Any]) -> dict[str, Any]:
    """The call's keyword arguments that are constants or ``args.*`` (those naming tensors are left out)."""
    out = {}
    for k in call.keywords:
        if k.arg is None:
            continue
        try:
            out[k.arg] = eval(compile(ast.Expression(k.value), "<train_coco>", "eval"), env)  # noqa: S307
        except NameError:
            continue
    return out


class Script:
    """What the reference's COCO loop computes, read from its source."""

    def __init__(self, module: Any) -> None:
        self.args = module.parser.parse_args([])
        src = inspect.getsource(module.train)
        self.tree = ast.parse(textwrap.dedent(src))
        self.loop = _loop(src)
        self.env = {"args": self.args, "np": np, "torch": torch}

    def _statements(self) -> list[ast.stmt]:
        return list(self.loop.body)

    def calls(self, name: str) -> list[ast.Call]:
        """Every call of ``name`` anywhere in ``train()``, in source order."""
        found = [node for node in ast.walk(self.tree) if _call_name(node) == name]
        if not found:
            raise ValueError(f"scripts/train_coco.py: train() calls no {name}()")
        return sorted(found, key=lambda c: (c.lineno, c.col_offset))  # type: ignore[arg-type]

    def kwargs_of(self, name: str, index: int = 0) -> dict[str, Any]:
        return _kwargs(self.calls(name)[index], self.env)

    def loss_weights(self, n: int) -> dict[str, float]:
        """The coefficient of each loss variable in ``loss`` at iteration ``n``, from the script's if-chain."""
        chain = next(s for s in self._statements() if isinstance(s, ast.If)
                     and any(isinstance(t, ast.Assign) and any(getattr(x, "id", "") == "loss" for x in t.targets)
                             for t in ast.walk(s)))
        names = list(TERM_OF)
        env = dict(self.env, n_iter=n, **{v: np.eye(len(names))[i] for i, v in enumerate(names)})
        code = compile(ast.Module(body=[chain], type_ignores=[]), "<train_coco loss>", "exec")
        exec(code, env)  # noqa: S102 - the reference's own statement, with basis vectors for the losses
        vector = env["loss"]
        return {TERM_OF[v]: float(vector[i]) for i, v in enumerate(names)}

    def mask_sources(self, n: int) -> dict[str, str]:
        """Which pseudo-label variable feeds ``mask_cle`` / ``mask_une`` at iteration ``n``."""
        out = {}
        for s in self._statements():
            if isinstance(s, ast.Assign) and isinstance(s.value, ast.IfExp):
                target = s.targets[0].id  # type: ignore[attr-defined]
                env = dict(self.env, n_iter=n)
                names = {x.id for x in ast.walk(s.value) if isinstance(x, ast.Name)}
                env.update({x: x for x in names if x not in env})
                out[target] = eval(compile(ast.Expression(s.value), "<train_coco mask>", "eval"), env)  # noqa: S307
        return out

    def label_thresholds(self) -> dict[str, dict[str, Any]]:
        """Thresholds of each role's ``cam_to_label``: par (valid_cam), cre, ure, main, ptc.

        A role's call is the last assignment of the variable that the consumer reads before it reads it.
        """
        statements = self._statements()
        assigned: dict[str, tuple[str, dict[str, Any]]] = {}
        roles: dict[str, dict[str, Any]] = {}
        for s in statements:
            if isinstance(s, ast.Assign) and _call_name(s.value) == "cam_to_label":
                targets = s.targets[0]
                names = [t.id for t in (targets.elts if isinstance(targets, ast.Tuple) else [targets])]
                kw = _kwargs(s.value, self.env)
                source = ast.unparse(s.value.args[0])  # type: ignore[attr-defined]
                kw["source"] = "aux" if "aux" in source else "main"
                for i, nm in enumerate(names):
                    if nm != "_":
                        assigned[nm] = (("valid" if i == 0 else "label"), kw)
                if names[0] == "valid_cam":
                    roles["par"] = kw
            for node in ast.walk(s):
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.IfExp):
                    key = {"mask_cle": "cre", "mask_une": "ure"}.get(node.targets[0].id)  # type: ignore[attr-defined]
                    if key:
                        roles[key] = assigned[node.value.body.id][1]  # type: ignore[attr-defined]
                        roles["main"] = assigned[node.value.orelse.id][1]  # type: ignore[attr-defined]
                if _call_name(node) == "label_to_aff_mask":
                    roles["ptc"] = assigned[node.args[0].id][1]  # type: ignore[attr-defined]
        return roles


def _ours_thresholds(cfg: MoReConfig) -> dict[str, dict[str, Any]]:
    p = cfg.pseudo
    return {
        "par": {"high_thre": p.par_bg_high, "low_thre": p.par_bg_low, "source": "main"},
        "cre": {"high_thre": p.cre_high, "low_thre": p.cre_low, "source": "aux"},
        "ure": {"high_thre": p.aux_high, "low_thre": p.aux_low, "source": "aux"},
        "main": {"high_thre": p.main_high, "low_thre": p.main_low, "source": "main"},
        "ptc": {"high_thre": p.aux_high, "low_thre": p.aux_low, "source": "aux"},  # token_masks: PTC = M_aux
    }


def _ours_use_main(cfg: MoReConfig, n: int) -> bool:
    # as more.train.step.training_step decides it
    return cfg.pseudo.lir_mask_source == "main" or n > cfg.pseudo.mask_switch_iter


def _class_tokens(ref: Any, num_attri: int) -> int:
    """Class tokens the reference's MATformer returns with ``num_attri`` tokens (reduced width, random weights)."""
    vit = ref.mat_vit.MATformer(img_size=32, patch_size=16, embed_dim=16, depth=3, num_heads=2, mlp_ratio=1,
                                qkv_bias=True, num_classes=num_attri)
    vit.eval()
    with torch.no_grad():
        tokens = vit.forward_features(torch.zeros(1, 3, 32, 32))[0]
    return int(tokens.shape[1])


def _lr(optim: torch.optim.Optimizer, steps: tuple[int, ...]) -> list[list[float]]:
    out = []
    for t in steps:
        optim.global_step = t  # type: ignore[attr-defined]
        optim.step()
        out.append([g["lr"] for g in optim.param_groups])
    return out


def checks_and_fixtures(ref: Any) -> tuple[list[Row], dict[str, Any]]:
    """Rows of the COCO schedule and a fixture of the reference's values."""
    import contextlib
    import io

    script = Script(ref.load_script("scripts/train_coco.py"))
    args = script.args
    cfg = load_config("coco")
    rows: list[Row] = []

    ref_w = [script.loss_weights(n) for n in ITERATIONS]
    our_w = [loss_weights(cfg, n) for n in ITERATIONS]
    for term in TERM_OF.values():
        a = torch.tensor([w[term] for w in our_w])
        b = torch.tensor([w[term] for w in ref_w])
        rows.append(compare(f"coco/weight {term} over n", a, b, atol=1e-12, rtol=0,
                            note=f"n in {ITERATIONS[0]}..{ITERATIONS[-1]} at every phase boundary"))

    sources = [script.mask_sources(n) for n in ITERATIONS]
    ref_main = torch.tensor([s["mask_cle"] == "pseudo_label" for s in sources])
    rows.append(compare("coco/mask switch (L_cre, L_ure from the main CAM)",
                        torch.tensor([_ours_use_main(cfg, n) for n in ITERATIONS]), ref_main, atol=0, rtol=0,
                        note=f"reference cam2mask={args.cam2mask}"))
    ref_une_main = torch.tensor([s["mask_une"] == "pseudo_label" for s in sources])
    rows.append(compare("coco/mask switch L_ure = L_cre", ref_une_main, ref_main, atol=0, rtol=0))

    theirs, ours = script.label_thresholds(), _ours_thresholds(cfg)
    for role in ("par", "cre", "ure", "main", "ptc"):
        keys = ("high_thre", "low_thre")
        rows.append(compare(f"coco/thresholds {role} (high, low)", torch.tensor([ours[role][k] for k in keys]),
                            torch.tensor([float(theirs[role][k]) for k in keys]), atol=1e-12, rtol=0,
                            note=f"CAM {theirs[role]['source']}"))
        rows.append(Row(f"coco/thresholds {role} CAM source", 0.0, 0.0, ours[role]["source"] == theirs[role]["source"],
                        f"ours {ours[role]['source']}, reference {theirs[role]['source']}"))
    par_kw = script.kwargs_of("refine_cams_with_bkg_v2")
    rows.append(compare("coco/PAR refine thresholds", torch.tensor([cfg.pseudo.par_bg_high, cfg.pseudo.par_bg_low]),
                        torch.tensor([float(par_kw["high_thre"]), float(par_kw["low_thre"])]), atol=1e-12, rtol=0))
    rows.append(compare("coco/CAM scales", torch.tensor(cfg.pseudo.cam_scales),
                        torch.tensor([float(s) for s in script.kwargs_of("multi_scale_cam2")["scales"]]),
                        atol=1e-12, rtol=0))
    rows.append(compare("coco/CRE tau", torch.tensor(cfg.lir.cre_temperature),
                        torch.tensor(float(script.kwargs_of("CRELoss_neg")["temp"])), atol=1e-12, rtol=0))
    energy = script.kwargs_of("DenseEnergyLoss")
    lc = cfg.loss
    rows.append(compare("coco/energy constants (weight, sigma_rgb, sigma_xy, scale)",
                        torch.tensor([lc.energy_scale, lc.energy_sigma_rgb, lc.energy_sigma_xy, lc.energy_scale_factor],
                                     dtype=torch.float64),
                        torch.tensor([float(energy[k]) for k in ("weight", "sigma_rgb", "sigma_xy", "scale_factor")],
                                     dtype=torch.float64), atol=0, rtol=1e-12))
    par = script.kwargs_of("PAR")
    rows.append(compare("coco/PAR iterations and dilations",
                        torch.tensor([cfg.pseudo.par_iters, *cfg.pseudo.par_dilations]),
                        torch.tensor([int(par["num_iter"]), *par["dilations"]]), atol=0, rtol=0))

    # lr schedule: the reference's optimizer with the script's arguments (5 groups: 1x, 1x, 10x, 10x, 10x)
    o = cfg.optim
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": args.lr * m, "weight_decay": args.wt_decay}
              for m in (1, 1, 10, 10, 10)]
    theirs_opt = ref.optimizer.PolyWarmupAdamW(params=groups, lr=args.lr, weight_decay=args.wt_decay,
                                               betas=args.betas, warmup_iter=args.warmup_iters,
                                               max_iter=args.max_iters, warmup_ratio=args.warmup_lr, power=args.power)
    mults = (1.0, 1.0) + (o.head_lr_mult,) * 3
    our_groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": o.lr * m} for m in mults]
    ours_opt = PolyWarmupAdamW(our_groups, cfg=o, max_iters=cfg.train.max_iters)
    lr_ref = torch.tensor(_lr(theirs_opt, LR_STEPS), dtype=torch.float64)
    lr_ours = torch.tensor(_lr(ours_opt, LR_STEPS), dtype=torch.float64)
    rows.append(compare("coco/lr per group over 80000 steps", lr_ours, lr_ref, atol=0, rtol=1e-9,
                        note=f"t in {LR_STEPS}"))
    rows.append(compare("coco/optimizer constants (wd, beta1, beta2, max_iters, warm-up)",
                        torch.tensor([o.weight_decay, o.beta1, o.beta2, cfg.train.max_iters, o.warmup_iters,
                                      o.warmup_ratio, o.power], dtype=torch.float64),
                        torch.tensor([args.wt_decay, *args.betas, args.max_iters, args.warmup_iters, args.warmup_lr,
                                      args.power], dtype=torch.float64), atol=0, rtol=1e-12))

    with contextlib.redirect_stdout(io.StringIO()):  # MATformer prints its training flag
        ref_tokens = _class_tokens(ref, args.num_attri)
    ours_tokens = (num_classes(cfg), resolved_top_k(cfg))
    rows.append(compare("coco/class tokens and GCR top-k", torch.tensor(ours_tokens),
                        torch.tensor([ref_tokens, int(0.5 * ref_tokens)]), atol=0, rtol=0,
                        note=f"reference num_attri={args.num_attri} incl. registers"))
    rows.append(Row("coco/batch per GPU", float(abs(cfg.train.batch_size - args.spg)), 0.0,
                    cfg.train.batch_size == args.spg,
                    f"ours {cfg.train.batch_size}, script default {args.spg}; the logged run used 2 GPUs x 4",
                    deliberate=True))

    fixture = {"iterations": list(ITERATIONS), "weights": ref_w, "use_main": ref_main.tolist(),
               "thresholds": {r: {"high_thre": float(t["high_thre"]), "low_thre": float(t["low_thre"]),
                                  "source": t["source"]} for r, t in theirs.items()},
               "cam_scales": [float(s) for s in script.kwargs_of("multi_scale_cam2")["scales"]],
               "cre_tau": float(script.kwargs_of("CRELoss_neg")["temp"]),
               "lr_steps": list(LR_STEPS), "lr": lr_ref, "class_tokens": ref_tokens}
    return rows, fixture
