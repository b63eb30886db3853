"""Stopping a run cleanly on SIGTERM or Ctrl-C, and processes that do not outlive the run.

Stop: `stop_on_signals()` (around the stages of a `synthpat` command) turns SIGTERM and SIGINT
into `Stopped`, raised in the main thread wherever it is (a Tune loop, a Ray Data iterator, a
`ray.get`): the stage's work in progress stops, what it already wrote stays in its work folder
(generation shards, finished trials' done markers), and the command ends with `leave()`: one
console line saying what was kept and that the same command resumes, then exit 128 + signal
(130 for SIGINT, 143 for SIGTERM) without waiting on Ray's threads. A second signal, or a stop
that takes longer than `GRACE_S`, leaves at once with the same status.

Ray (2.60) puts its own SIGTERM handlers in the driver on `ray.init`: a Python one that exits
with status 1 after tearing the node down, and, in the core worker, absl's native failure
handler, which dumps "*** SIGTERM received ... PC:" and aborts; and every later `ray.init` call
(ray.data.llm makes one per processor) sets the Python one again. `ensure_ray` stops the latter
(`guard_from_ray`) and, right after its own `ray.init`, puts ours back on top of both
(`reinstall`). Tune's own Ctrl-C handler,
which would end `Tuner.fit` early with a partial grid that looks like a result, is switched off
(TUNE_DISABLE_SIGINT_HANDLER).

Leftovers: Ray reaps its own workers when the driver dies (the local raylet and GCS share the
driver's fate through PR_SET_PDEATHSIG, and a worker exits when its raylet goes), but not what a
worker starts itself: vLLM's engine core and its model workers are `multiprocessing` children
of the engine actor, and are orphaned when it dies. `die_with_parent_hook` (Ray's
`worker_process_setup_hook` for every worker of the run) makes each `multiprocessing` child of a
worker, and recursively theirs, ask the kernel for SIGKILL when its parent dies.

Only the standard library is imported here: the hook runs in every worker and every child.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

#: Signals that stop a run.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: The longest a stop may take before the process leaves anyway (the issue allows 30 s).
GRACE_S = 20.0
#: How long `leave` waits for `ray.shutdown` (it can hang on a GCS that already died).
RAY_SHUTDOWN_S = 5.0
#: Ray's module path of the setup hook, for `ray.init(runtime_env=...)`.
SETUP_HOOK = "orchestrator.shutdown.die_with_parent_hook"

_PR_SET_PDEATHSIG = 1
_state: dict[str, Any] = {"installed": 0, "signum": None}


class Stopped(KeyboardInterrupt):  # noqa: N818 - a stop, not an error
    """The run was told to stop by `signum`. Not an Exception, so that `except Exception`
    handlers on the way (retry loops, Ray's and Tune's) let it through; a KeyboardInterrupt,
    because a signal that lands while the main thread waits in `ray.get` comes out of it as
    a plain KeyboardInterrupt whatever the handler raised (`as_stop` turns it back).

    `stage` and `kept` are filled in by the stage runner: where it stopped and what stays."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)
        self.stage: str | None = None
        self.kept = ""

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal_name(self.signum)

    def __str__(self) -> str:
        return f"stopped by {self.signal_name}"


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def stop_message(stop: Stopped) -> str:
    """The console line of a stopped run: the signal, the stage, what was kept, how to resume."""
    where = f" in stage {stop.stage}" if stop.stage else ""
    kept = f"kept {stop.kept}" if stop.kept else "nothing to keep"
    return f"stopped by {stop.signal_name}{where}: {kept}; run the same command again to resume"


def received() -> int | None:
    """The stop signal received in this process, if any."""
    return _state["signum"]


def as_stop(error: BaseException) -> Stopped | None:
    """The stop that `error` is: itself, or a KeyboardInterrupt that a stop signal caused
    (Ray raises its own from `ray.get`); None for anything else."""
    if isinstance(error, Stopped):
        return error
    if isinstance(error, KeyboardInterrupt) and received() is not None:
        return Stopped(received())
    return None


def _handle(signum: int, frame: Any) -> None:
    if _state["signum"] is not None:  # a second signal: no more waiting
        _exit_now(signum, f"second {signal_name(signum)}: leaving now")
    _state["signum"] = signum
    threading.Thread(
        target=_watchdog, args=(signum, GRACE_S), name="stop-watchdog", daemon=True
    ).start()
    raise Stopped(signum)


def _watchdog(signum: int, grace_s: float) -> None:
    time.sleep(grace_s)
    _exit_now(signum, f"the stop took over {grace_s:.0f}s: leaving now")


def _exit_now(signum: int, why: str) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write(f"{why}; run the same command again to resume\n")
        sys.stderr.flush()
    os._exit(128 + signum)


def _install() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, _handle)


def reinstall() -> None:
    """Put the stop handlers back on top of whatever was installed since (`ray.init` installs
    Ray's); nothing outside `stop_on_signals`."""
    if _state["installed"] and threading.current_thread() is threading.main_thread():
        _install()


def guard_from_ray() -> None:
    """Keep Ray from replacing the stop handlers: every `ray.init` call sets Ray's SIGTERM
    handler through `ray._private.utils.set_sigterm_handler`, an initialized Ray too (ray.data.llm
    calls `ray.init(ignore_reinit_error=True)` for each processor it builds). While
    `stop_on_signals` is active, that call leaves ours in place."""
    import ray._private.utils as ray_utils

    if getattr(ray_utils.set_sigterm_handler, "_keeps_stop_handlers", False):
        return
    original = ray_utils.set_sigterm_handler

    @functools.wraps(original)
    def set_sigterm_handler(handler: Callable[..., Any]) -> None:
        if not _state["installed"]:
            original(handler)

    set_sigterm_handler._keeps_stop_handlers = True  # type: ignore[attr-defined]
    ray_utils.set_sigterm_handler = set_sigterm_handler


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise `Stopped` in the main thread while inside; the previous
    handlers come back on the way out (a command run in-process, as tests do, leaves none)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    _state["installed"] += 1
    _install()

    try:
        yield
    finally:
        _state["installed"] -= 1
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def leave(stop: Stopped, say: Callable[[str], None], message: str | None = None) -> None:
    """End a stopped command: say what was kept (or `message`), stop Ray (bounded), exit
    128 + signal.

    `os._exit`: Ray's threads (and a GCS that died with the process group) can hold a normal
    exit for a minute; everything the run wrote is already on disk."""
    with contextlib.suppress(Exception):
        say(message or stop_message(stop))
    _shutdown_ray(RAY_SHUTDOWN_S)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(stop.exit_code)


def _shutdown_ray(timeout_s: float) -> None:
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return

    def shut() -> None:
        with contextlib.suppress(Exception):
            ray.shutdown()

    t = threading.Thread(target=shut, name="ray-shutdown", daemon=True)
    t.start()
    t.join(timeout_s)


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def tie_to_parent(parent_pid: int | None = None) -> None:
    """Die (SIGKILL) when the parent dies; exit now if it already has (`parent_pid`: the parent
    expected; None: the one this process has, orphaned only if reparented to init)."""
    set_parent_death_signal()
    if os.getppid() != parent_pid if parent_pid is not None else os.getppid() == 1:
        os._exit(1)  # the parent died before the request took effect


def _run_dying_with_parent(
    parent_pid: int | None, target: Callable[..., Any], *args, **kwargs
) -> Any:
    """A `multiprocessing` child's target: die with the parent, then run the real target.
    `parent_pid` None: a forkserver's child, whose parent is the server (which dies with the
    process that started it), not the process that asked for the child."""
    tie_to_parent(parent_pid)
    die_with_parent_hook()  # this child's own children too
    return target(*args, **kwargs)


def die_with_parent_hook() -> None:
    """Make every `multiprocessing.Process` this process starts die when this process dies.

    Ray's `worker_process_setup_hook` for the run's workers. The kernel signals a child when
    the *thread* that started it ends; vLLM and Ray Data start their processes from threads
    that live as long as the actor."""
    from multiprocessing.process import BaseProcess

    if getattr(BaseProcess.start, "_dies_with_parent", False):
        return
    original = BaseProcess.start

    @functools.wraps(original)
    def start(self: BaseProcess) -> None:
        target = getattr(self, "_target", None)
        wrapped = isinstance(target, functools.partial) and target.func is _run_dying_with_parent
        if target is not None and not wrapped:  # a Process subclass with its own run() is left
            method = self._start_method or multiprocessing.get_start_method(allow_none=True)
            parent = None if method == "forkserver" else os.getpid()
            self._target = functools.partial(_run_dying_with_parent, parent, target)
        return original(self)

    start._dies_with_parent = True  # type: ignore[attr-defined]
    BaseProcess.start = start  # type: ignore[method-assign]
