"""Imported first by the engine forkserver (`orchestrator.engine_fork.PRELOAD`): the server asks
the kernel for SIGKILL when the process that started it (the vLLM actor) dies, so a killed actor
leaves no server behind, nor, through theirs, the engine cores forked from it. Only as a
forkserver's preload: importing it anywhere else would tie that process to its parent."""

import sys

from orchestrator.shutdown import tie_to_parent

if sys.argv[:1] == ["-c"] and "multiprocessing.forkserver" in sys.modules:  # the server itself
    tie_to_parent()
