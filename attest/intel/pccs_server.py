"""``tdxsim pcs serve``: the simulated Intel PCS of a PKI directory as a PCCS-compatible HTTP service
(docs/attestation.md §17, docs/cli.md).

Real verifiers (dcap-qvl's ``get_collateral``, Intel's QVL behind a PCCS, go-tdx-guest, trustee) fetch
collateral from a PCCS or Intel's PCS by URL; this process answers them for the PKI ``tdxsim pki init DIR``
made, with the responses of ``attest.intel.pcs_responses``. aiohttp serves HTTP/1.1 on one asyncio loop: every
body is prepared at start, so requests share nothing that needs a lock and run concurrently.

Lifecycle as every tdxsim server (docs/conventions.md §4): ``--listen`` (loopback by default, port 0 picks
a free port; an address in use is refused, exit 2), ``listening on HOST:PORT`` as the first stdout line,
``GET /healthz`` answers ``{"status":"SERVING"}``, SIGTERM or SIGINT stops it (in-flight requests get two
seconds) and it exits 0. Against hostile clients it has the bounds of every tdxsim HTTP server
(``wire.http_serving``: an idle or trickling connection is closed, header sizes bounded, one log line per bad
request); another method than GET or HEAD is 405 in the PCS's one-line shape. Plaintext by default;
``--tls-cert``/``--tls-key`` serve HTTPS (``--tls-client-ca`` requires client certificates). The API is
read-only and public, as a PCCS's GET endpoints are: there is no admin surface and no credential.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import ssl
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from attest.formats.collateral import TCB_STATUSES
from attest.intel.pcs_directory import PkiError, load_pki
from attest.intel.pcs_responses import PcsApi, request_id
from wire import tls
from wire.http_serving import plain_server_header, runner_arguments
from wire.serving import check_server_arguments, stop_on_signals

SHUTDOWN_GRACE = 2.0
HEALTH_BODY = json.dumps({"status": "SERVING"}, separators=(",", ":")).encode()  # compact, as every body here


class _OneLineLog(logging.Handler):
    """aiohttp's server log as tdxsim's: a request the HTTP parser refuses (the client already has its 400)
    is not logged; anything else is one stderr line, never a traceback."""

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            return
        detail = (
            f": {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}" if error else ""
        )
        print(f"tdxsim pcs: {record.getMessage()}{detail}"[:300], file=sys.stderr, flush=True)


def _quiet_aiohttp() -> None:
    for name in ("aiohttp.server", "aiohttp.web", "aiohttp.internal"):
        logger = logging.getLogger(name)
        logger.handlers = [_OneLineLog()]
        logger.propagate = False


def build_app(api: PcsApi) -> web.Application:
    """The aiohttp application: ``/healthz`` and every path through ``api`` (unknown ones are its 404)."""

    async def health(request: web.Request) -> web.Response:
        return web.Response(body=HEALTH_BODY, content_type="application/json")

    async def pcs(request: web.Request) -> web.Response:
        answer = api.answer(request.path, list(request.query.items()))
        response = web.Response(status=answer.status, body=answer.body)
        response.headers["Content-Type"] = answer.content_type
        for name, value in answer.headers:
            response.headers[name] = value
        return response

    @web.middleware
    async def with_request_id(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPMethodNotAllowed as refused:  # the PCS's answer shape: one line of text
            text = f"Method not allowed. {request.method} {request.path[:200]!r}: the PCS API is GET only\n"
            response = web.Response(status=refused.status, text=text, content_type="text/plain")
            response.headers["Allow"] = "GET,HEAD"
        response.headers["Request-ID"] = request_id()
        return response

    app = plain_server_header(web.Application(middlewares=[with_request_id]))
    app.router.add_get("/healthz", health)
    app.router.add_get("/{tail:.*}", pcs)
    return app


def _ssl_context(args: argparse.Namespace, config: tls.TlsConfig | None) -> ssl.SSLContext | None:
    if config is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    if config.root_certificates is not None:
        context.load_verify_locations(cadata=config.root_certificates.decode())
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def _serve(
    app: web.Application, host: str, port: int, context: ssl.SSLContext | None, early: threading.Event
) -> int:
    """Serve until SIGTERM or SIGINT (``early``: one that came during start-up); announce the bound port
    first. Returns the exit status."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if early.is_set():
        stop.set()
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_GRACE, **runner_arguments("tdxsim pcs"))
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=context, reuse_address=True, reuse_port=False)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        print(f"tdxsim pcs: cannot listen on {host}:{port}: {err.strerror or err}", file=sys.stderr)
        return 2
    bound = runner.addresses[0][1]
    shown = f"[{host}]" if ":" in host else host
    print(f"listening on {shown}:{bound}", flush=True)
    await stop.wait()
    await runner.cleanup()
    return 0


def run_serve(args: argparse.Namespace) -> int:
    early = threading.Event()
    stop_on_signals(early)  # a launcher's SIGTERM during start-up still ends in a clean stop
    _quiet_aiohttp()
    if args.listen.startswith(("unix:", "unix-abstract:")):
        print("tdxsim pcs: --listen takes HOST:PORT (HTTP over TCP)", file=sys.stderr)
        return 2
    config, problem = check_server_arguments(args)
    if problem:
        print(f"tdxsim pcs: {problem}", file=sys.stderr)
        return 2
    try:
        api = PcsApi(load_pki(args.pki), args.tcb_status)
        context = _ssl_context(args, config)
    except (PkiError, OSError, ssl.SSLError) as err:
        print(f"tdxsim pcs: {err}", file=sys.stderr)
        return 2
    host, _, port = args.listen.rpartition(":")
    print(
        f"tdxsim pcs: simulated PCS of {args.pki}, fmspc {api.fmspc}, pck ca {api.pki.pck_ca_kind}, "
        f"tcb status {api.tcb_status}, {tls.describe(config)}",
        file=sys.stderr,
        flush=True,
    )
    return asyncio.run(_serve(build_app(api), host.strip("[]"), int(port), context, early))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="pcs_command", metavar="ACTION", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve a simulated PCS over HTTP as a PCCS does (Intel PCS API v4)",
        description="Serve the simulated Intel PCS of DIR ('tdxsim pki init DIR') over HTTP, as a PCCS "
        "serves Intel's PCS API v4: /sgx/certification/v4/{pckcert,pckcrl,rootcacrl,tcb,qe/identity} and "
        "/tdx/certification/v4/{tcb,qe/identity}, issuer chains in URL-encoded headers, signed bodies "
        "byte for byte as signed. Point dcap-qvl's get_collateral, a verifier's --pccs or any PCCS "
        f"client at http://HOST:PORT. GET /healthz answers {HEALTH_BODY.decode()} for load balancers "
        "and readiness probes. Prints 'listening on HOST:PORT' first; SIGTERM or Ctrl-C stops it.",
    )
    serve.add_argument(
        "--pki", required=True, type=Path, metavar="DIR", help="the PKI 'tdxsim pki init' made"
    )
    serve.add_argument(
        "--listen",
        default="127.0.0.1:8081",
        help="HOST:PORT to bind (default 127.0.0.1:8081; port 0 picks one)",
    )
    serve.add_argument(
        "--tcb-status",
        choices=TCB_STATUSES,
        default=None,
        help="serve TCB Info that puts the platform at this status (default: the PKI's own, UpToDate "
        "unless 'pki init --tcb-status' said otherwise)",
    )
    tls.add_server_arguments(serve)
    serve.set_defaults(func=run_serve)
