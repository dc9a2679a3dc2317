"""Which protocol produced a number in Tables 1 and 2, and the paper's values for those tables.

A :class:`Protocol` is everything that changes a pseudo-label or segmentation score besides the model: the dataset
and split, the output (``seeds`` / ``masks`` for Table 1; ``seg_raw`` / ``seg_crf`` / ``cam2seg`` / ``cam2seg_crf``
for Table 2), the map it came from (CAM, LAM or the decoder), the inference scales and whether DenseCRF ran. Whether
DenseCRF ran is read from the output's name, never from a run-level flag, so that a raw number can never land in a
CRF column: ``masks``, ``seg_crf`` and ``cam2seg_crf`` are post-processed, the others are not.

The paper's values (``/work/shared/paper/MoRe-AAAI2025.txt``) carry their own protocol text: Table 1 states the
split (VOC train) and the post-processing (seeds raw, masks with DenseCRF) but not the scales; Table 2 states neither
the scales nor whether CRF was applied.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

TABLE1_OUTPUTS = ("seeds", "masks")
TABLE2_OUTPUTS = ("seg_raw", "seg_crf", "cam2seg", "cam2seg_crf")
OUTPUTS = TABLE1_OUTPUTS + TABLE2_OUTPUTS
CRF_OUTPUTS = frozenset({"masks", "seg_crf", "cam2seg_crf"})
VALIDATION = "validation"  # the trainer's own validation (Table 2, beside the authors' training log)
# task -> (output without CRF, output after CRF), as ``more infer`` writes them
TASK_OUTPUTS = {"seeds": ("seeds", "masks"), "masks": ("seeds", "masks"), "seg": ("seg_raw", "seg_crf"),
                "cam2seg": ("cam2seg", "cam2seg_crf")}
_SPLIT_ORDER = {"train": 0, "val": 1, "val_part": 2, "test": 3}
_FAMILY_ORDER = {"seeds": 0, "masks": 0, "seg_raw": 1, "seg_crf": 1, "cam2seg": 2, "cam2seg_crf": 2, VALIDATION: 3}
DATASET_LABELS = {"voc": "VOC", "coco": "COCO"}


def dataset_label(name: str) -> str:
    return DATASET_LABELS.get(name, name or "unknown dataset")


def scales_text(scales: tuple[float, ...] | None) -> str:
    if not scales:
        return "scales unknown"
    return ("scale " if len(scales) == 1 else "scales ") + ", ".join(f"{s:g}" for s in scales)


@dataclass(frozen=True)
class Protocol:
    """How one number was produced.

    Attributes:
        dataset: ``voc``, ``coco``, ``synthetic`` or a custom dataset's name.
        split: the split scored (``train`` for Table 1's pseudo labels).
        output: one of :data:`OUTPUTS`, or :data:`VALIDATION` for the trainer's validation.
        source: ``cam`` / ``lam`` (seeds, masks, cam2seg), ``seg`` (the decoder); ``""`` where the table's row says it.
        scales: the inference scales (flips are always merged); None when unknown.
        multiscale: whether the run asked for the multi-scale set (``--multiscale``); None when unknown.
    """

    dataset: str
    split: str
    output: str
    source: str = ""
    scales: tuple[float, ...] | None = None
    multiscale: bool | None = None

    @property
    def crf(self) -> bool:
        return self.output in CRF_OUTPUTS

    @property
    def table(self) -> int:
        return 1 if self.output in TABLE1_OUTPUTS else 2

    def without_source(self) -> Protocol:
        return replace(self, source="")

    @property
    def post(self) -> str:
        """``raw`` or ``CRF``: the post-processing, spelled the same in every header."""
        return "CRF" if self.crf else "raw"

    def what(self) -> str:
        """The prediction: seeds / masks, seg, cam2seg from CAM or LAM, or the trainer's validation."""
        if self.output in TABLE1_OUTPUTS:
            return self.output + (f" {self.source.upper()}" if self.source else "")
        if self.output.startswith("cam2seg"):
            return f"cam2seg {self.source.upper()}" if self.source else "cam2seg"
        if self.output == VALIDATION:
            return "seg, training-time validation"
        return "seg"

    def header(self) -> str:
        """The column header: dataset and split, prediction, scales, raw or CRF (in that order, always)."""
        where = f"{dataset_label(self.dataset)} {self.split}"
        if self.output == VALIDATION:
            return f"{where}, {self.what()} (single scale, no flip), raw"
        scales = scales_text(self.scales) + (" (multi-scale)" if self.multiscale else "")
        return f"{where}, {self.what()}, {scales}, {self.post}"

    def header_lines(self) -> list[str]:
        """The header on three short lines (for LaTeX): where, what and at which scales, raw or CRF."""
        where = f"{dataset_label(self.dataset)} {self.split}"
        if self.output == VALIDATION:
            return [where, "seg, training-time", "validation, raw"]
        scales = scales_text(self.scales) + (" (ms)" if self.multiscale else "")
        return [where, f"{self.what()}, {scales}", self.post]

    def key(self) -> str:
        """A CSV-safe column key, unique per protocol."""
        scales = "-".join(f"{s:g}" for s in self.scales) if self.scales else "unknown"
        parts = [self.dataset or "unknown", self.split, self.output]
        parts += [self.source] if self.source and self.source != "seg" else []
        if self.output != VALIDATION:
            parts += [f"s{scales}"] + (["ms"] if self.multiscale else [])
        return "_".join("".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in p) for p in parts)

    def sort_key(self) -> tuple:
        """Dataset (VOC, COCO, others), split (train, val, test), prediction, scales, then raw before CRF: raw and
        CRF of the same protocol sit side by side."""
        return (list(DATASET_LABELS).index(self.dataset) if self.dataset in DATASET_LABELS else 9, self.dataset,
                _SPLIT_ORDER.get(self.split, 9), self.split, _FAMILY_ORDER.get(self.output, 9),
                self.source, self.scales or (), bool(self.multiscale), self.crf)


# ------------------------------------------------------------------------------------------ the paper's values

PAPER_SOURCE = "MoRe (AAAI 2025), ViT-B/16"


@dataclass(frozen=True)
class PaperValue:
    """A published number with the protocol the paper states for it."""

    key: str  # CSV column key
    header: str  # column header: what, where, and the post-processing when the paper states it
    value: float
    dataset: str
    split: str
    family: str  # seeds | masks | seg
    source: str  # cam | lam | "" (Table 2)
    crf: bool | None  # None: the paper does not say


# Table 1, "Performance comparison of pseudo labels on PASCAL VOC train set": MoRe-CAM and MoRe-LAM rows.
PAPER_TABLE1 = (
    PaperValue("paper_seeds_cam", "Paper seeds (VOC train, raw)", 76.9, "voc", "train", "seeds", "cam", False),
    PaperValue("paper_masks_cam", "Paper masks (VOC train, CRF)", 79.7, "voc", "train", "masks", "cam", True),
    PaperValue("paper_seeds_lam", "Paper seeds (VOC train, raw)", 77.0, "voc", "train", "seeds", "lam", False),
    PaperValue("paper_masks_lam", "Paper masks (VOC train, CRF)", 80.0, "voc", "train", "masks", "lam", True),
)
# Table 2, "Semantic segmentation results on PASCAL VOC and MS COCO": the MoRe row.
PAPER_TABLE2 = (
    PaperValue("paper_voc_val", "Paper VOC val", 76.4, "voc", "val", "seg", "", None),
    PaperValue("paper_voc_test", "Paper VOC test", 75.0, "voc", "test", "seg", "", None),
    PaperValue("paper_coco_val", "Paper COCO val", 47.4, "coco", "val", "seg", "", None),
)
PAPER_TABLE1_NOTE = ("Paper columns: MoRe-CAM / MoRe-LAM rows of the paper's Table 1 (" + PAPER_SOURCE + "), VOC "
                     "train; seeds without post-processing, masks with DenseCRF; the paper does not state the scales.")
PAPER_TABLE2_NOTE = ("Paper columns: the MoRe row of the paper's Table 2 (" + PAPER_SOURCE + "); the paper states "
                     "neither the inference scales nor whether DenseCRF was applied, and VOC test is scored by the "
                     "PASCAL evaluation server.")


def paper_marks_protocol(paper: PaperValue, protocol: Protocol, source: str) -> bool:
    """Whether a paper value belongs beside our number of ``protocol`` (for the figures' marks): same split and
    prediction, same post-processing where the paper states it, the same source for Table 1, and the same dataset
    when ours is VOC or COCO (other datasets are compared with VOC, for scale only)."""
    ours = dataset_label(protocol.dataset)
    theirs = dataset_label(paper.dataset)
    if ours in DATASET_LABELS.values() and ours != theirs:
        return False
    if ours not in DATASET_LABELS.values() and paper.dataset != "voc":
        return False
    if protocol.split != paper.split:
        return False
    if paper.family in TABLE1_OUTPUTS:
        return protocol.output == paper.family and source == paper.source
    return protocol.output in ("seg_raw", "seg_crf") and (paper.crf is None or paper.crf == protocol.crf)
