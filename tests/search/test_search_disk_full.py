"""A search whose output disk fills: its seed cache and its tables end with the one ``disk full`` error and leave no
temporary file (a real size-capped tmpfs)."""

from __future__ import annotations

import numpy as np
import pytest
from tmpfs import mounted_tmpfs

from more.outputs import DiskFullError
from more.search.cached import SeedCache
from more.search.report import write_text


def test_the_seed_cache_and_the_tables_on_a_full_disk(tmp_path):
    n = 400_000  # ~2.4 MB of arrays (savez does not compress): more than the 1 MB filesystem holds
    cache = SeedCache(np.ones(n, np.uint8), np.zeros(n, np.float32), np.zeros(n, np.uint8), 3, 2)
    with mounted_tmpfs(tmp_path / "fs", "1m") as mnt:
        with pytest.raises(DiskFullError, match=r"^disk full: writing the search's seed cache to .*cache\.npz"):
            cache.save(mnt / "cache.npz")
        with pytest.raises(DiskFullError, match=r"^disk full: .*trials\.md"):
            write_text(mnt / "out" / "trials.md", "x" * 2_000_000)
        assert not [p for p in mnt.rglob("*") if p.is_file()]  # nothing half-written, no temporary file
        write_text(mnt / "out" / "trials.md", "| a |\n")  # room for a small table: written
        assert (mnt / "out" / "trials.md").read_text() == "| a |\n"
