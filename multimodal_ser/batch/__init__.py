"""Many recordings into one Parquet dataset, resumably, on local worker processes or a Ray cluster.

    inputs (manifest CSV / globs) ─► items (content hash + options) ─► engine (local / ray)
        ─► dataset (OUT/<table>/recording=<id>/part.parquet) ─► status (OUT/status.parquet)
"""

from .dataset import open_table
from .inputs import read_inputs
from .run import run_batch

__all__ = ["open_table", "read_inputs", "run_batch"]
