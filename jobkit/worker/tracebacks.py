"""What a failed attempt stores: its traceback, trimmed and formatted once per place."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any, ClassVar

logger = logging.getLogger("jobkit")


#: Tracebacks stored on a job are cut to this many characters (the end is kept).
MAX_TRACEBACK = 8000


class _RememberedFrames(traceback.StackSummary):
    """A stack summary that formats each distinct frame line only once.

    Python 3.11 parses a frame's source line to draw its ``^^^`` markers;
    a handler failing over and over repeats the same few frames, so their
    text is kept and reused. The key holds everything the text is made of
    (file, position, function and the source line as read), so reusing it
    gives the very text ``traceback`` would.
    """

    _formatted: ClassVar[dict[tuple[object, ...], str]] = {}
    _LIMIT: ClassVar[int] = 4096

    def format_frame_summary(
        self, frame_summary: traceback.FrameSummary, **kwargs: Any
    ) -> str:
        source = getattr(frame_summary, "_original_line", None)
        if kwargs or frame_summary.locals or source is None:
            return super().format_frame_summary(frame_summary, **kwargs)
        key = (
            frame_summary.filename,
            frame_summary.lineno,
            frame_summary.end_lineno,
            frame_summary.colno,
            frame_summary.end_colno,
            frame_summary.name,
            source,
        )
        formatted = self._formatted.get(key)
        if formatted is None:
            formatted = super().format_frame_summary(frame_summary)
            if len(self._formatted) >= self._LIMIT:
                self._formatted.clear()
            self._formatted[key] = formatted
        return formatted


def _traceback(error: BaseException) -> traceback.TracebackException:
    """``error``'s traceback, chained exceptions included, with frames remembered."""
    root = traceback.TracebackException.from_exception(error)
    todo, seen = [root], set()
    while todo:
        te = todo.pop()
        if id(te) in seen:
            continue
        seen.add(id(te))
        te.stack = _RememberedFrames(te.stack)
        todo.extend(t for t in (te.__cause__, te.__context__) if t is not None)
        todo.extend(te.exceptions or ())
    return root


# Formatted frames by traceback position: (id(code), tb_lasti, tb_lineno) ->
# (code, (filename, lineno, name), text). The code object is kept so that its
# id cannot be reused by another while the entry lives.
_FrameEntry = tuple[Any, tuple[str, int | None, str], str]

_frames_by_position: dict[tuple[int, int, int], _FrameEntry] = {}


def _plain_traceback(error: BaseException) -> str | None:
    """The standard traceback text of a lone exception from remembered frames.

    Extracting a frame is what costs (its column positions are found by
    walking the code's positions table, and its file is stat-ed for changes),
    and a handler failing over and over fails at the same few positions. So
    each position is formatted once by :mod:`traceback` itself and its text
    reused, the source line as read the first time. Returns None when a
    frame was not seen yet, or when the exception is not the plain case
    (chained, a group, a syntax error, recursion, a traceback limit): the
    caller then formats it in full.
    """
    if (
        error.__cause__ is not None
        or (error.__context__ is not None and not error.__suppress_context__)
        or isinstance(error, BaseExceptionGroup | SyntaxError)
        or getattr(sys, "tracebacklimit", None) is not None
    ):
        return None
    parts = ["Traceback (most recent call last):\n"]
    last: tuple[str, int | None, str] | None = None
    tb = error.__traceback__
    if tb is None:
        parts.clear()
    while tb is not None:
        code = tb.tb_frame.f_code
        entry = _frames_by_position.get((id(code), tb.tb_lasti, tb.tb_lineno))
        if entry is None or entry[0] is not code or entry[1] == last:
            # Unseen, or a repeated line that ``traceback`` would fold.
            return None
        last = entry[1]
        parts.append(entry[2])
        tb = tb.tb_next
    parts.extend(_exception_only(error))
    return "".join(parts)


# The last lines of tracebacks by (exception type, message): formatting them
# builds a whole TracebackException, and a handler failing over and over
# fails with the same few. Types whose line says more than the message (a
# syntax error's source, the "Did you mean" of a name, attribute or import
# error) and exceptions with notes are formatted each time.
_lines_by_message: dict[tuple[type[BaseException], str], list[str]] = {}

_OWN_LINES = (SyntaxError, NameError, AttributeError, ImportError)


def _exception_only(error: BaseException) -> list[str]:
    if isinstance(error, _OWN_LINES) or getattr(error, "__notes__", None) is not None:
        return traceback.format_exception_only(error)
    try:
        message = str(error)
    except Exception:  # traceback has its own words for that
        return traceback.format_exception_only(error)
    key = (type(error), message)
    lines = _lines_by_message.get(key)
    if lines is None:
        lines = traceback.format_exception_only(error)
        if len(_lines_by_message) >= _RememberedFrames._LIMIT:
            _lines_by_message.clear()
        _lines_by_message[key] = lines
    return lines


def _remember_frames(error: BaseException, te: traceback.TracebackException) -> None:
    """Keep the formatted frames of ``error``'s own traceback, by position."""
    tb = error.__traceback__
    stack = te.stack
    if getattr(sys, "tracebacklimit", None) is not None:
        return  # the stack may not hold every frame of ``tb``
    if len(_frames_by_position) + len(stack) > _RememberedFrames._LIMIT:
        _frames_by_position.clear()
    for frame in stack:
        assert tb is not None
        code = tb.tb_frame.f_code
        _frames_by_position[(id(code), tb.tb_lasti, tb.tb_lineno)] = (
            code,
            (frame.filename, frame.lineno, frame.name),
            stack.format_frame_summary(frame),
        )
        tb = tb.tb_next


def describe_error(error: BaseException) -> str:
    """Return the text stored on a job for ``error``: a summary, then the traceback.

    The first line is ``"ExcType: message"`` (what listings show); after a
    blank line comes the formatted traceback, its end kept if it is long.

    Example::

        >>> from jobkit.worker.tracebacks import describe_error
        >>> try:
        ...     raise ValueError("no such user")
        ... except ValueError as e:
        ...     text = describe_error(e)
        >>> text.splitlines()[0]
        'ValueError: no such user'
        >>> "Traceback (most recent call last)" in text
        True
    """
    message = str(error)
    summary = type(error).__name__ + (f": {message}" if message else "")
    summary = summary.splitlines()[0] if summary else type(error).__name__
    trace = _plain_traceback(error)
    if trace is None:
        te = _traceback(error)
        trace = "".join(te.format())
        _remember_frames(error, te)
    if len(trace) > MAX_TRACEBACK:
        trace = "...\n" + trace[-MAX_TRACEBACK:]
    text = f"{summary}\n\n{trace}"
    if not text.isascii():
        # A message may hold text that UTF-8 cannot encode (a lone surrogate
        # from a file name): stored as is, it would make the settle fail.
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
