"""``python -m more data prepare voc|coco|folder``: from the downloaded archives (or a folder of your own images) to
a tree ``more`` trains on, resumable, written atomically, never inside the sources, recorded in ``ROOT/prepare.json``.

* :func:`~more.data.prepare.voc.prepare_voc`: VOC 2012 + SBD -> ``SegmentationClassAug`` and ``train_aug``.
* :func:`~more.data.prepare.coco.prepare_coco`: COCO 2014 instances -> class-index masks in the reference's layout.
* :func:`~more.data.prepare.folder.prepare_folder`: images + labels CSV (or masks) -> ``dataset.yaml`` and lists.
"""

from more.data.prepare.common import PREPARE_FILE, Outcome, PrepareError
from more.data.prepare.sources import SourceError

__all__ = ["PREPARE_FILE", "Outcome", "PrepareError", "SourceError"]
