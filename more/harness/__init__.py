"""The ablation harness: declarative specs (`spec`), Ray on loopback or a cluster (`local_ray`), the Tune adapter and
runner (`tune_runner`) and the results table (`results`). Only this package imports ray."""

from more.harness.spec import AblationSpec, Resources, SpecError, Trial, expand, load_spec, parse_spec, spec_hash

__all__ = ["AblationSpec", "Resources", "SpecError", "Trial", "expand", "load_spec", "parse_spec", "spec_hash"]
