"""A rank for tests/test_distributed.py's checks of the launcher: rank 0 fails before joining, or all hang."""

import os
import sys
import time

import mlx.core as mx

if __name__ == "__main__":
    if sys.argv[1] == "fail-before-init" and os.environ["MLX_RANK"] == "0":
        sys.exit(3)  # the other rank now waits in init() for a rank that never comes
    if sys.argv[1] == "hang":
        time.sleep(3600)
    mx.distributed.init(backend="ring", strict=True)
