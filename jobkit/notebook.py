"""Small helpers that keep the book's notebook cells short and their output clean.

A notebook is read on a page, so its output should show what the reader's
code did, not where this machine keeps its files:

- :func:`short_traceback` rewrites a traceback the same way everywhere:
  jobkit's own frames are folded into one line, a notebook cell is named
  ``<cell>``, and any other file by its name alone;
- :func:`show_logs` prints the ``jobkit`` logger's records in the notebook,
  with their tracebacks shortened, and :func:`hide_logs` keeps a logger's
  records out of it;
- :func:`run_cli` runs the ``jobkit`` command line against a database, as a
  reader would in a shell, and prints what it answered: as a process of its
  own, or in the notebook's own interpreter, which answers the same without
  the second a new Python takes to start.

Nothing here is needed to use jobkit; apart from the command line it runs,
it only uses the standard library.

Example::

    >>> from jobkit.notebook import short_traceback
    >>> print(short_traceback('  File "/tmp/ipykernel_7/42.py", line 3, in f'))
      File "<cell>", line 3, in f
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = ["hide_logs", "run_cli", "short_traceback", "show_logs"]

_PACKAGE = str(Path(__file__).resolve().parent)
_FRAME = re.compile(r'^(\s*)File "([^"]+)", line (\d+), in (.+)$')
_CELL = re.compile(r"ipykernel_\d+[/\\]\d+\.py$")


def _is_jobkit(path: str) -> bool:
    # Another copy of jobkit (a venv's, in a rendered page) counts too.
    return path.startswith(_PACKAGE + os.sep) or "/jobkit/" in path


def short_traceback(text: str) -> str:
    """Return ``text`` with its tracebacks shortened for a page.

    Each run of frames inside jobkit's own modules becomes one line,
    ``... (N frames in jobkit)``, with the source lines under them; a frame
    in a notebook cell names the file ``<cell>``; any other file is named by
    its last path component. Lines that are not frames pass through as they
    are, so whole log output can be handed in.

    Example::

        >>> tb = '''Traceback (most recent call last):
        ...   File "/venv/lib/jobkit/worker/worker.py", line 9, in _execute
        ...     result = await self._invoke(task, job)
        ...   File "/home/ada/shop/tasks.py", line 4, in charge
        ...     raise KeyError("acme")
        ... KeyError: 'acme'
        ... '''
        >>> print(short_traceback(tb))
        Traceback (most recent call last):
          ... (1 frame in jobkit)
          File "tasks.py", line 4, in charge
            raise KeyError("acme")
        KeyError: 'acme'
    """
    out: list[str] = []
    hidden = 0

    def folded() -> str:
        return f"{indent}... ({hidden} frame{'s' * (hidden > 1)} in jobkit)"

    indent = "  "
    skipping = False
    for line in text.splitlines():
        frame = _FRAME.match(line)
        if frame:
            lead, path, number, where = frame.groups()
            if _is_jobkit(path):
                hidden += 1
                indent, skipping = lead, True
                continue
            if hidden:
                out.append(folded())
                hidden = 0
            skipping = False
            name = "<cell>" if _CELL.search(path) else re.split(r"[/\\]", path)[-1]
            out.append(f'{lead}File "{name}", line {number}, in {where}')
            continue
        if skipping and line.startswith(indent + " "):
            continue  # the source and ^^^ markers under a hidden frame
        if hidden:
            out.append(folded())
            hidden = 0
        skipping = False
        out.append(line)
    if hidden:
        out.append(folded())
    return "\n".join(out)


class _ShortFormatter(logging.Formatter):
    def formatException(self, ei: object) -> str:
        return short_traceback(super().formatException(ei))  # type: ignore[arg-type]


def show_logs(
    level: int | str = logging.INFO,
    *,
    fmt: str = "%(levelname)s %(name)s: %(message)s",
    logger: str = "jobkit",
    defaults: Mapping[str, object] | None = None,
) -> logging.Handler:
    """Print ``logger``'s records on stdout with short tracebacks; return the handler.

    ``fmt`` and ``defaults`` are those of :class:`logging.Formatter`:
    ``defaults`` fills the fields that a record's ``extra`` may lack.
    Calling it again replaces the handler it installed before, so a
    notebook can run the cell twice without printing every line twice.

    Example::

        >>> import logging
        >>> from jobkit.notebook import show_logs
        >>> handler = show_logs("WARNING", logger="jobkit.example")
        >>> logging.getLogger("jobkit.example").warning("disk %d%% full", 91)
        WARNING jobkit.example: disk 91% full
        >>> handler = show_logs(
        ...     fmt="%(job_id)s %(message)s", logger="jobkit.example",
        ...     defaults={"job_id": "-"},
        ... )
        >>> logging.getLogger("jobkit.example").warning("no job here")
        - no job here
    """
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_ShortFormatter(fmt, defaults=defaults))
    handler.set_name("jobkit.notebook")
    log = logging.getLogger(logger)
    log.handlers[:] = [h for h in log.handlers if h.get_name() != "jobkit.notebook"]
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    return handler


def hide_logs(*loggers: str) -> None:
    """Keep the records of ``loggers`` out of the notebook (``"jobkit"`` by default).

    A chapter that reads the job records rather than the logs calls it, so
    that failures it provokes on purpose do not fill the page. It replaces
    the handler :func:`show_logs` installed with one that drops every
    record, and stops the records from reaching the root logger's handlers;
    :func:`show_logs` brings them back.

    Example::

        >>> import logging
        >>> from jobkit.notebook import hide_logs
        >>> hide_logs("jobkit.example")
        >>> logging.getLogger("jobkit.example").warning("not shown")
        >>> logging.getLogger("jobkit.example").propagate
        False
    """
    for name in loggers or ("jobkit",):
        quiet = logging.NullHandler()
        quiet.set_name("jobkit.notebook")
        log = logging.getLogger(name)
        log.handlers[:] = [h for h in log.handlers if h.get_name() != "jobkit.notebook"]
        log.addHandler(quiet)
        log.propagate = False


def run_cli(
    *args: str,
    db: str | os.PathLike[str],
    cwd: str | os.PathLike[str] | None = None,
    show: bool = True,
    timeout: float = 60,
    in_process: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``jobkit ARGS`` on the database ``db``, print what it says, and return it.

    The command runs as its own process, exactly as typed in a shell with
    ``JOBKIT_DB`` set; ``cwd`` is where it looks for an ``--app`` module,
    and ``timeout`` how many seconds it may take. With ``show`` the command
    line is printed after a ``$``, then its output, with the database's
    folder written as ``.`` so the page shows no machine paths.

    With ``in_process`` the command runs in this interpreter instead, through
    the command line's own entry point (:func:`jobkit.cli.main.main`), with
    ``JOBKIT_DB`` set and ``cwd`` as the current folder while it runs, its
    output captured and its exit status taken from what it returns or from
    the ``SystemExit`` it raises. It answers as the process would, without
    the second or so a new Python takes to import jobkit: right for the
    commands that read or change the database; a command whose point is to
    be a process of its own (a worker to stop or to kill) keeps its process.
    What the command imports stays imported (an ``--app`` module among
    them), and ``timeout`` does not apply.

    Example::

        >>> import tempfile, pathlib
        >>> from jobkit.notebook import run_cli
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> done = run_cli("stats", db=folder / "jobs.db", show=False)
        >>> done.returncode, done.stderr.startswith("jobkit: error:")
        (1, True)
        >>> db = folder / "jobs.db"
        >>> done = run_cli("enqueue", "ping", db=db, show=False, in_process=True)
        >>> done.args, done.returncode, done.stdout
        (['jobkit', 'enqueue', 'ping'], 0, 'enqueued job 1\\n')
        >>> done = run_cli("dead", db=db, in_process=True)
        $ jobkit dead
        no dead jobs
        <BLANKLINE>
    """
    if in_process:
        done = _run_in_process(list(args), db=db, cwd=cwd)
    else:
        env = {**os.environ, "JOBKIT_DB": str(db)}
        done = subprocess.run(
            [sys.executable, "-m", "jobkit", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if show:
        folder = str(Path(db).resolve().parent)
        print("$ jobkit", " ".join(args))
        print((done.stdout + done.stderr).replace(folder + os.sep, ""))
    return done


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def _run_in_process(
    args: list[str],
    *,
    db: str | os.PathLike[str],
    cwd: str | os.PathLike[str] | None,
) -> subprocess.CompletedProcess[str]:
    """``jobkit ARGS`` through the command line's entry point, in this process."""
    from .cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_environment("JOBKIT_DB", str(db)))
        if cwd is not None:
            stack.enter_context(contextlib.chdir(cwd))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        try:
            status = main(args)
        except SystemExit as exc:
            # What the interpreter would make of it on the way out: None is
            # success, a number the status, anything else a message and 1.
            if exc.code is None or isinstance(exc.code, int):
                status = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                status = 1
    return subprocess.CompletedProcess(
        ["jobkit", *args], status, out.getvalue(), err.getvalue()
    )
