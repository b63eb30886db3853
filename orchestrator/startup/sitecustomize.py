"""Run by Python at start-up in every process of a local synthpat run: this folder is on the
PYTHONPATH of the local Ray that `orchestrator.ray_runtime.ensure_ray` starts, so Ray's workers
(a worker still starting up too) and every Python process they start inherit it.

Where the run marks the environment (SYNTHPAT_DIE_WITH_PARENT=1), the process asks the kernel
for SIGKILL when its parent dies, so that nothing outlives a raylet that died with its driver
(Ray's own reaping misses workers that were still starting up). Standard library only, and
nothing that can fail the interpreter's start.
"""

import os
import sys

if os.environ.get("SYNTHPAT_DIE_WITH_PARENT") == "1" and sys.platform.startswith("linux"):
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # orphaned before the request took effect
            os._exit(1)
    except (OSError, AttributeError):
        pass
