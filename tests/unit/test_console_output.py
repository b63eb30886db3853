"""The stage console: library output at the file-descriptor level goes to the stage's log, the
project's own lines to the terminal; `-v` shows both; progress on a pipe is plain lines."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from pathlib import Path
    from orchestrator import console as c

    c.configure(verbose={verbose})
    c.PLAIN_EVERY_S = 0.0
    log = Path(sys.argv[1])
    with c.stage_output(log, "demo"):
        c.console.print("stage line for the user")
        print("python stdout from a library")
        print("python stderr from a library", file=sys.stderr)
        os.write(2, b"native fd-2 write\\n")
        subprocess.run([sys.executable, "-c", "print('child process output')"], check=True)
        with c.StageProgress("generate smol", total=4, unit="rows") as bar:
            bar.update(2, "70 tokens/s")
            bar.update(2, "71 tokens/s")
        c.warn_once("k", "act on this")
        c.warn_once("k", "act on this")
    print("after the stage: back on stdout")
    with c.stage_output(log, "again"):
        os.write(1, b"second stage output\\n")
    """
)

LIBRARY = [
    "python stdout from a library",
    "python stderr from a library",
    "native fd-2 write",
    "child process output",
    "second stage output",
]


def _run(tmp_path: Path, verbose: bool) -> tuple[str, str]:
    log = tmp_path / "logs" / "demo.log"
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(verbose=verbose), str(log)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout + res.stderr, log.read_text()


def test_library_output_goes_to_the_log_and_the_console_to_the_terminal(tmp_path):
    terminal, log = _run(tmp_path, verbose=False)
    for line in LIBRARY:
        assert line in log, line
        assert line not in terminal, line
    assert "stage line for the user" in terminal and "stage line for the user" not in log
    assert "after the stage: back on stdout" in terminal
    assert f"logs: {tmp_path / 'logs'}/<stage>.log" in terminal
    # Both stages' output in one file, appended, each under its own header.
    assert "===== demo:" in log and "===== again:" in log
    # A pipe gets plain progress lines with the fields, not a redrawn bar.
    assert "generate smol: 4/4 rows" in terminal and "71 tokens/s" in terminal
    assert "\r" not in terminal
    assert terminal.count("act on this") == 1


def test_verbose_shows_library_output_live_and_still_logs_it(tmp_path):
    terminal, log = _run(tmp_path, verbose=True)
    for line in LIBRARY:
        assert line in log, line
        assert line in terminal, line
    assert "shown live (-v)" in terminal


def test_stage_output_restores_the_terminal_after_an_error(tmp_path):
    script = textwrap.dedent(
        """
        import os, sys
        from pathlib import Path
        from orchestrator import console as c

        try:
            with c.stage_output(Path(sys.argv[1]), "boom"):
                os.write(2, b"inside\\n")
                raise RuntimeError("the stage failed")
        except RuntimeError as exc:
            print(f"caught: {exc}", file=sys.stderr)
        """
    )
    log = tmp_path / "boom.log"
    res = subprocess.run(
        [sys.executable, "-c", script, str(log)], cwd=REPO, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert "caught: the stage failed" in res.stderr and "inside" not in res.stderr
    assert "inside" in log.read_text()
