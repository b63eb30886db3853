"""What `synthpat run` shows: the stage lines and live progress on the terminal, everything else
(Ray, vLLM, DeepSpeed, transformers, Tune's tables) in `runs/<study>/logs/<stage>.log`.

The libraries write from many places a logging filter cannot reach (Ray's native core worker,
vLLM's engine processes through Ray's log monitor, tqdm bars, C extensions), so a stage's
output is redirected at the file-descriptor level: fds 1 and 2 point at the stage's log while
it runs, and the project's own console writes to a saved copy of the terminal. `-v` tees the
same output to the terminal as well (a pipe and a pump thread), still writing the log.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from rich.console import Console

#: Plain (non-terminal) progress prints a line at most this often.
PLAIN_EVERY_S = 30.0


class _Terminal:
    """A file for the console: the saved terminal while a stage's output goes to its log,
    otherwise whatever `sys.stderr` is now (so pytest's capture still sees it)."""

    def __init__(self) -> None:
        self.saved: IO[str] | None = None

    @property
    def target(self) -> IO[str]:
        return self.saved if self.saved is not None else sys.stderr

    def write(self, text: str) -> int:
        return self.target.write(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        try:
            return self.target.isatty()
        except (AttributeError, ValueError):
            return False

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.target, "encoding", None) or "utf-8"


TERMINAL = _Terminal()
console = Console(file=TERMINAL, soft_wrap=True)  # type: ignore[arg-type]


class _Settings:
    verbose = False  # `-v`: library output on the terminal too
    redirect = True  # False: leave fds alone (tests that capture output, `synthpat serve`)
    announced = False  # the logs folder has been named once


SETTINGS = _Settings()


def configure(*, verbose: bool = False, redirect: bool = True) -> None:
    """Set how stage output is handled (the CLI calls this once)."""
    SETTINGS.verbose, SETTINGS.redirect, SETTINGS.announced = verbose, redirect, False


def _flush_all() -> None:
    for f in (sys.stdout, sys.stderr):
        with suppress(AttributeError, ValueError, OSError):
            f.flush()
    with suppress(OSError, AttributeError):  # C stdio buffers of native libraries
        ctypes.CDLL(None).fflush(None)


class _Tee:
    """-v: a pipe on fds 1 and 2 whose pump thread copies each chunk to the log and the
    terminal. The log file can change from stage to stage; the pipe stays for the process
    (child processes such as Ray's keep their copy of it)."""

    def __init__(self, terminal_fd: int) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.terminal_fd = terminal_fd
        self.log: IO[bytes] | None = None
        self.lock = threading.Lock()
        self.drained = threading.Event()
        threading.Thread(target=self._pump, name="synthpat-tee", daemon=True).start()

    def drain(self, timeout: float = 2.0) -> None:
        """Wait until what was written before now is copied (a marker through the pipe: a
        write under PIPE_BUF is atomic, so one read sees all of it)."""
        self.drained.clear()
        os.write(self.write_fd, _DRAIN)
        self.drained.wait(timeout)

    def _pump(self) -> None:
        while chunk := os.read(self.read_fd, 65536):
            if _DRAIN in chunk:
                chunk = chunk.replace(_DRAIN, b"")
                self.drained.set()
            with self.lock:
                if self.log is not None:
                    self.log.write(chunk)
                    self.log.flush()
            with suppress(OSError):
                os.write(self.terminal_fd, chunk)


_TEE: _Tee | None = None
_DRAIN = b"\x00synthpat-drain\x00"


@contextmanager
def stage_output(log_path: Path, stage: str) -> Iterator[Path]:
    """While the block runs, fds 1 and 2 write to `log_path` (appended: a resumed stage keeps
    its earlier attempts' log), the console to the terminal. Restored on the way out, an
    exception included, so its message reaches the terminal."""
    global _TEE
    if not SETTINGS.redirect:
        yield log_path
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _flush_all()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = _terminal_copy(saved[2])
    log = open(log_path, "ab", buffering=0)  # noqa: SIM115 - closed in finally
    log.write(f"\n===== {stage}: {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n".encode())
    TERMINAL.saved = terminal
    if not SETTINGS.announced:
        SETTINGS.announced = True
        live = "; shown live (-v)" if SETTINGS.verbose else "; -v shows it live"
        console.print(
            f"logs: {_shown(log_path.parent)}/<stage>.log (Ray, vLLM and library output{live})"
        )
    try:
        if SETTINGS.verbose:
            if _TEE is None:
                _TEE = _Tee(os.dup(saved[2]))
            with _TEE.lock:
                _TEE.log = log
            target = _TEE.write_fd
        else:
            target = log.fileno()
        for fd in (1, 2):
            os.dup2(target, fd)
        yield log_path
    finally:
        _flush_all()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        if _TEE is not None:
            _TEE.drain()
            with _TEE.lock:
                _TEE.log = None
        TERMINAL.saved = None
        if terminal is not sys.stderr:
            terminal.close()
        log.close()


def _shown(path: Path) -> str:
    """`path` relative to the working directory where it is under it (runs/<study>/logs)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _terminal_copy(fd2_copy: int) -> IO[str]:
    """Where the console writes while fd 2 is the log: a copy of fd 2 when `sys.stderr` is
    fd 2 (a terminal, a pipe), else `sys.stderr` itself (a test's captured stream, which no
    fd redirection touches)."""
    try:
        on_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, ValueError, OSError):
        on_fd2 = False
    if not on_fd2:
        return sys.stderr
    return os.fdopen(os.dup(fd2_copy), "w", buffering=1, encoding="utf-8", errors="replace")


class StageProgress:
    """One live progress line for a stage: a rich bar on a terminal; on a pipe or in CI, a
    plain line at most every `PLAIN_EVERY_S` seconds and one at the end (no redrawn bars)."""

    def __init__(self, description: str, total: int, unit: str, show: bool = True) -> None:
        self.description, self.total, self.unit, self.show = description, total, unit, show
        self.done, self.fields = 0, ""
        self.t0 = self.last_plain = time.monotonic()
        self._bar: Any = None
        if show and console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(unit),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=console,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._task = self._bar.add_task(description, total=total, info="")
            self._bar.start()

    def update(self, advance: int = 0, info: str = "") -> None:
        """Count `advance` more done; `info` ("71 tokens/s, 0 failed") is shown beside."""
        self.done += advance
        self.fields = info
        if self._bar is not None:
            self._bar.update(self._task, advance=advance, info=self.fields)
        elif self.show and time.monotonic() - self.last_plain >= PLAIN_EVERY_S:
            self.last_plain = time.monotonic()
            console.print(self._plain(), markup=False, highlight=False)

    def _plain(self) -> str:
        took = time.monotonic() - self.t0
        eta = ""
        if 0 < self.done < self.total:
            eta = f", ETA {took / self.done * (self.total - self.done):.0f}s"
        extra = f", {self.fields}" if self.fields else ""
        return (
            f"{self.description}: {self.done}/{self.total} {self.unit} in {took:.0f}s{eta}{extra}"
        )

    def close(self) -> None:
        """Stop the bar (a terminal keeps its last state); a plain final line otherwise."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self.show and self.done:
            console.print(self._plain(), markup=False, highlight=False)

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_WARNED: set[str] = set()


def warn_once(key: str, text: str) -> None:
    """A warning a user must act on, once per run: what happened and the fix, in words."""
    if key in _WARNED:
        return
    _WARNED.add(key)
    console.print(f"[yellow]warning:[/yellow] {text}", highlight=False)
