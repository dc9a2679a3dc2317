"""Config keys added after trials were first tracked leave the trial identity unchanged at their defaults."""

from __future__ import annotations

import pytest

from more.config import load_config
from more.harness.identity import LATER_KEYS, config_key, identity_payload


def payload(*overrides: str) -> dict:
    return identity_payload(load_config("synthetic", list(overrides)), stop={}, scheduler=None, metric="m", mode="max")


def test_later_keys_at_their_defaults_are_not_in_the_identity():
    flat = payload()["config"]
    assert not set(LATER_KEYS) & set(flat) and "train.batch_size" in flat
    assert load_config("synthetic").train.accum_steps == LATER_KEYS["train.accum_steps"]


@pytest.mark.parametrize("override", ["train.accum_steps=2", "train.val_subset=val_part", "train.final_full_val=true"])
def test_a_later_key_that_is_set_changes_the_identity(override):
    key = override.split("=")[0]
    assert key in payload(override)["config"]
    assert config_key(payload(override)) != config_key(payload())
