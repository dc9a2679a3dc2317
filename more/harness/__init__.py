"""The ablation harness: declarative specs (`spec`), the launch API (`launcher`: :func:`launch`, also behind
``python -m more ablate``), Ray on loopback or a cluster (`local_ray`), the Tune adapter and runner (`tune_runner`),
reuse and claims, the results table (`results`) and where a launch stands (`status`). Only this package imports ray;
importing it does not."""

from more.harness.launcher import AfterTune, LaunchOptions, LaunchRefused, LaunchResult, launch
from more.harness.spec import AblationSpec, Resources, SpecError, Trial, expand, load_spec, parse_spec, spec_hash

__all__ = [
    "AblationSpec", "AfterTune", "LaunchOptions", "LaunchRefused", "LaunchResult", "Resources", "SpecError", "Trial",
    "expand", "launch", "load_spec", "parse_spec", "spec_hash",
]
