"""What every tdxsim HTTP server (aiohttp: ``tdxsim pcs serve``, the verifier's KBS port) sets against hostile
clients (docs/conventions.md §6 "HTTP servers").

aiohttp's own defaults leave two gaps: a connection that never completes its request line and headers is
kept for an hour (``keepalive_timeout`` 3630 s also bounds the wait for a first request), and every request
it cannot parse (a bad request line, an oversized header, a bad chunk size, plain text on a TLS port) is
logged with a full traceback on stderr. ``runner_arguments`` closes a connection that has not sent a whole
request within ``IDLE_TIMEOUT`` seconds and keeps aiohttp's header bounds explicit; a request aiohttp's parser
refuses gets its 400 and no log line (a client's mistake, which anyone could repeat to flood the log), any
other fault of the HTTP layer is one stderr line, never a traceback. The same holds for what asyncio reports
on the server's loop (``socket.accept() out of system resource`` when clients hold every file descriptor:
asyncio pauses accepting for a second and retries, and logs each pause with a traceback by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

IDLE_TIMEOUT = 15.0  # seconds a connection may take to send a complete request (headers), or sit idle
MAX_LINE_SIZE = 8190  # bytes of the request line (aiohttp's default)
MAX_FIELD_SIZE = 8190  # bytes of one header (aiohttp's default)
MAX_HEADERS = 64  # headers in one request (aiohttp's default is 128; no tdxsim client sends more than 10)
MAX_LOGGED = 200  # characters of an error message a log line repeats
LOOP_REPORT_INTERVAL = 1.0  # seconds between two reports of one kind from the event loop


class _OneLine(logging.Formatter):
    """``PROG: MESSAGE: Type: what the exception says`` on one line, never a traceback."""

    def __init__(self, prog: str) -> None:
        super().__init__()
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        line = f"{self.prog}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            err = record.exc_info[1]
            what = " ".join(str(err).split())
            what = what if len(what) <= MAX_LOGGED else what[: MAX_LOGGED - 1] + "…"
            line += f": {type(err).__name__}: {what}"
        return line.replace("\n", " ")


def _not_a_parse_error(record: logging.LogRecord) -> bool:
    return not (record.exc_info and isinstance(record.exc_info[1], HttpProcessingError))


def one_line_logger(prog: str) -> logging.Logger:
    """The logger an aiohttp server of ``prog`` reports through: one stderr line per event."""
    logger = logging.getLogger(f"tdxsim.http.{prog.replace(' ', '-')}")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_OneLine(prog))
        handler.addFilter(_not_a_parse_error)
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return logger


def one_line_loop_errors(loop: asyncio.AbstractEventLoop, prog: str) -> None:
    """Report what ``loop`` reports (an exception no one retrieved, a failed accept) as one stderr line, at
    most one a second of each kind: with every descriptor taken, asyncio reports each connection waiting in
    the backlog, hundreds a second, until clients let go."""
    logger = one_line_logger(prog)
    last: dict[str, float] = {}
    held_back: dict[str, int] = {}

    def report(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "event loop error"))
        kind, now = message[:60], time.monotonic()
        if now - last.get(kind, -LOOP_REPORT_INTERVAL) < LOOP_REPORT_INTERVAL:
            held_back[kind] = held_back.get(kind, 0) + 1
            return
        last[kind] = now
        more = held_back.pop(kind, 0)
        line = message if len(message) <= MAX_LOGGED else message[: MAX_LOGGED - 1] + "…"
        logger.error(
            line + (f" ({more} more like it not shown)" if more else ""), exc_info=context.get("exception")
        )

    loop.set_exception_handler(report)


SERVER_HEADER = "tdxsim"  # what ``Server:`` says instead of aiohttp's "Python/3.x aiohttp/3.y"


async def _plain_server_header(request: web.BaseRequest, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_HEADER


def plain_server_header(app: web.Application) -> web.Application:
    """Answer ``Server: tdxsim`` instead of the Python and aiohttp versions, which tell a scanner which
    known flaws to try; aiohttp fills the header only where a response has none (returns ``app``)."""
    app.on_response_prepare.append(_plain_server_header)
    return app


def runner_arguments(prog: str) -> dict[str, Any]:
    """Keyword arguments for ``aiohttp.web.AppRunner``: no access log, no signal handling of its own (the
    caller's), the idle and header bounds above and the one-line logger. Called on the server's running loop
    (where an ``AppRunner`` is made), it also makes that loop's own reports one line
    (``one_line_loop_errors``)."""
    with contextlib.suppress(RuntimeError):  # no running loop: nothing to quiet
        one_line_loop_errors(asyncio.get_running_loop(), prog)
    return {
        "access_log": None,
        "handle_signals": False,
        "keepalive_timeout": IDLE_TIMEOUT,
        "max_line_size": MAX_LINE_SIZE,
        "max_field_size": MAX_FIELD_SIZE,
        "max_headers": MAX_HEADERS,
        "logger": one_line_logger(prog),
    }
