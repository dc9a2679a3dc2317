"""Typed configuration for MoRe: defaults live here, YAML files and dotted overrides are overlays.

Every field is addressable by a dotted key (``lir.cre_weight=0.1``). The same strings are used on the
command line, in ablation specs (``ablations/*.yaml``) and as Ray Tune / Optuna search-space keys.

Defaults reproduce the reference code's VOC recipe (MORE_SPEC §2.8, §3, §4). Where the paper and the
reference code disagree (MORE_SPEC §7) the field's comment names the difference number, and
``fidelity`` flips all of them at once (see ``more.config.fidelity``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DataConfig:
    """Dataset, splits and training augmentation (MORE_SPEC §4.3, §5)."""

    dataset: str = "voc"  # voc | coco | synthetic | custom (classes, images and splits from data.root/dataset.yaml)
    root: str = (
        "work/data/voc"  # dataset root holding JPEGImages/, SegmentationClassAug/ (or SegmentationClass/), ImageSets/
    )
    train_split: str = "train_aug"
    val_split: str = "val"
    labels_file: str = ""  # optional file of image-level labels; empty = derive from masks (cached)
    crop_size: int = 448
    scale_min: float = 0.32  # RandomResizedCrop scale range
    scale_max: float = 1.0
    ratio_min: float = 0.75  # RandomResizedCrop aspect ratio range
    ratio_max: float = 1.3333333333333333
    hflip_prob: float = 0.5
    jitter_prob: float = 0.5  # ColorJitter is applied with this probability (COCO: 0.8)
    jitter_brightness: float = 0.4
    jitter_contrast: float = 0.4
    jitter_saturation: float = 0.2
    jitter_hue: float = 0.1
    augmentation: str = "voc"  # voc (RandomResizedCrop) | coco (rescale + zero-pad crop), §4.3
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])  # §7.12: ImageNet stats
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    num_workers: int = 2
    synth_generate: bool = True  # dataset=synthetic: generate the tree at `root` when it is missing
    synth_classes: int = 6
    synth_train: int = 240
    synth_val: int = 60
    synth_image_size: int = 128
    synth_seed: int = 0


@dataclass
class ModelConfig:
    """Backbone, heads and decoder (MORE_SPEC §1)."""

    variant: str = "vit_b16"  # a name in more.model.build.VARIANTS
    pretrained: str = ""  # local .pth/.safetensors/.npz file, or a timm tag (needs a reachable hub); "" = random init
    num_registers: int = 4  # §7.1: reference adds 4 register tokens; paper has none
    aux_layer: int = -3  # block whose patch tokens feed the aux classifier (-3 = 10th of 12)
    lam: str = "dot"  # §7.6: dot (reference) | cosine (paper)
    decoder_channels: int = 512
    decoder_dilation: int = 5


@dataclass
class GCRConfig:
    """Graph Category Representation, paper Eq. (1)-(5), MORE_SPEC §1.5."""

    enabled: bool = True  # false = "w/o GCR"
    top_k: int = 0  # explicit K; 0 = derive from top_k_ratio
    top_k_ratio: float = 0.5
    top_k_ratio_of: str = "classes"  # §7.2: classes (reference: int(0.5*C)) | patches (paper: 0.5*L = 392)
    candidates: str = "classes_and_patches"  # §7.4: classes_and_patches (reference) | patches (paper)
    similarity: str = "dot"  # §7.3: dot (reference, scaled 1/sqrt(D)) | cosine (paper)
    fusion: str = "reference"  # §7.5: reference (0.1-scaled residual + LayerNorm) | paper (Eq. 5)
    weighting: str = "sum_product"  # §7.17: sum_product (reference einsum, (Σ t)(Σ gate)) | dot (paper Eq. 4)


@dataclass
class LIRConfig:
    """Learnable Inter-class Regularization: L_cre (Eq. 7) and L_ure (Eq. 8-9), MORE_SPEC §2.3-2.4."""

    cre_weight: float = 0.2  # alpha
    ure_weight: float = 0.1  # beta
    cre_temperature: float = 0.5  # tau (COCO 0.1)
    cre_norm: str = "reference"  # §7.9: reference (per-class mean, summed over classes) | paper (1/N+)
    cre_normalize_patches: bool = False  # §7.9: reference keeps patch tokens unnormalised; paper uses cosine
    ure_kernel: int = 6  # d
    ure_phi: float = 1.2  # phi
    ure_num_tokens: int = 8  # N
    ure_strict: bool = False  # §7.10: reference tests ">= phi"; paper "> phi"
    ure_abs: bool = True  # §7.10: reference uses |cos|; paper cos
    ure_fallback: bool = True  # §7.10: reference adds floor((N-n)/4) random foreground tokens
    ure_token_offset: str = "reference"  # §7.10: reference (window top-left, (-3,-3) bug) | centered


@dataclass
class LossConfig:
    """Weights and constants of the remaining terms and their schedule (MORE_SPEC §2.1-2.8)."""

    cls_weight: float = 1.0
    cls_aux_weight: float = 1.0
    mct_weight: float = 1.0
    mct_temperature: float = 0.07
    ptc_weight: float = 0.3
    ptc_weight_late: float = 0.3  # PTC weight once lir_start has passed (train_coco.py: w_ptc, 0.3, too)
    seg_weight: float = 0.12  # gamma
    energy_weight: float = 0.05
    energy_scale: float = 1e-7  # DenseEnergyLoss's internal weight
    energy_sigma_rgb: float = 15.0
    energy_sigma_xy: float = 100.0
    energy_scale_factor: float = 0.5
    energy_tile: int = 2048  # rows of the exact bilateral kernel computed at once
    energy_filter: str = "lattice"  # §2.7.1: lattice (rloss's permutohedral lattice, reference) | exact (Gaussian sum)
    ptc_start: int = -1  # a term is on when the 0-based iteration n > start (-1 = from the first step)
    lir_start: int = -1
    seg_start: int = 2000  # seg + energy warm-up: off while n <= 2000
    seg_target: str = "cam"  # §7.7: cam (reference: PAR-refined main CAM) | lam (paper)


@dataclass
class PseudoConfig:
    """Pseudo-label thresholds and switch points (MORE_SPEC §3, §3.4)."""

    cam_scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.75, 1.5])
    par_bg_high: float = 0.7  # lambda_h of the PAR high-background variant (COCO 0.65)
    par_bg_low: float = 0.25  # lambda_l
    cre_high: float = 0.5  # M_cle from the aux CAM
    cre_low: float = 0.25
    aux_high: float = 0.7  # M_aux from the aux CAM (L_ure, PTC)
    aux_low: float = 0.25
    main_high: float = 0.6  # M_main from the main CAM (after mask_switch_iter)
    main_low: float = 0.35
    mask_switch_iter: int = 10000  # aux -> main CAM masks for L_cre/L_ure (COCO 50000)
    lir_mask_source: str = "aux_then_main"  # §7.11: aux_then_main (reference) | main (paper)
    par_iters: int = 10
    par_channels: str = "auto"  # PAR over: present (bg + present classes; one host read) | all (no sync) | auto
    par_dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 12, 24])


@dataclass
class OptimConfig:
    """PolyWarmupAdamW (MORE_SPEC §4.1)."""

    lr: float = 6e-5
    head_lr_mult: float = 10.0
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    power: float = 0.9
    # Parameters no weighted loss term reaches in a step (the decoder during the seg warm-up): zero_grad (reference:
    # its 0.0 * seg_loss gives them zero gradients, so AdamW decays them and counts the step) | skip (left untouched).
    idle_params: str = "zero_grad"


@dataclass
class TrainConfig:
    """The training loop (MORE_SPEC §4.2)."""

    max_iters: int = 20000
    batch_size: int = 4  # images per process and micro-step
    # Gradient accumulation: micro-steps of batch_size images per optimizer step. The global batch is
    # processes x batch_size x accum_steps; 1 process x 2 x 4 gives the update of the reference's 2-GPU x 4 COCO run.
    accum_steps: int = 1
    # A subset of data.val_split validated during training when its list is in the data root (coco preset: the
    # authors' val_part, the first 5000 val2014 images); empty or no list: the whole data.val_split.
    val_subset: str = ""
    final_full_val: bool = False  # after the last iteration also validate the whole data.val_split (val_full/...)
    seed: int = 0
    log_every: int = 200  # losses are read from the device only every n steps
    eval_every: int = 2000
    ckpt_every: int = 2000
    keep_ckpts: int = 3
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | off
    compile: bool = False
    deterministic: bool = True


@dataclass
class EvalConfig:
    """Validation and inference (MORE_SPEC §5)."""

    split: str = "val"
    batch_size: int = 8
    resize: int = 448  # every image is resized to a square of this size
    bkg_thre: float = 0.5
    max_images: int = 0  # 0 = the whole split
    num_vis: int = 4  # fixed val images drawn in the picture grid at each evaluation
    infer_cam_scales: list[float] = field(default_factory=lambda: [1.0])
    infer_multiscale: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.75, 1.25, 1.5, 1.75, 2.0])
    seg_scales: list[float] = field(default_factory=lambda: [1.0, 1.25, 1.5])
    crf_iters: int = 10
    crf_gauss_sxy: float = 1.0
    crf_gauss_compat: float = 3.0
    crf_bi_sxy: float = 67.0
    crf_bi_srgb: float = 3.0
    crf_bi_compat: float = 4.0
    crf_workers: int = 0  # 0 = 60% of the CPU cores
    cam2seg_min_pixels: int = 5


@dataclass
class RuntimeConfig:
    """Where and how a run executes."""

    out_dir: str = "work/runs"
    run_name: str = ""  # empty = derived from the config name and time
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_threads: int = 0  # torch intra-op threads; 0 = torch's default


@dataclass
class MoReConfig:
    """The whole configuration of one MoRe run."""

    name: str = "voc"
    fidelity: str = "reference"  # reference | paper: sets every §7 switch at once; explicit keys win
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    gcr: GCRConfig = field(default_factory=GCRConfig)
    lir: LIRConfig = field(default_factory=LIRConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
