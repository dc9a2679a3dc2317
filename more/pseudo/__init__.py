"""Pseudo labels from class activation maps: multi-scale CAM/LAM, thresholds, PAR refinement and DenseCRF.

Modules (import them directly; this package imports nothing so that CRF worker processes stay free of torch):

* :mod:`more.pseudo.cam`: ``multi_scale_cam``, ``multi_scale_lam``, ``minmax_normalize``, ``cam_to_label``,
  ``token_masks`` (MORE_SPEC §3.1, §3.2, §3.4, §5.2).
* :mod:`more.pseudo.par`: ``PAR`` and ``refine_cams_with_bkg`` (MORE_SPEC §3.3, §8.4).
* :mod:`more.pseudo.crf`: ``dense_crf``, ``crf_from_scores``, ``crf_map`` (MORE_SPEC §5.2).
"""
