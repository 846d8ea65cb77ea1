"""The KBS protocol's HTTP endpoints (``tdxsim verifier --kbs-listen ADDR``) on aiohttp (docs/kbs.md §5).

=========================================================  =============================================
``POST /kbs/v0/auth``      Request (JSON)                   200 Challenge, ``Set-Cookie: kbs-session-id``
``POST /kbs/v0/attest``    Attestation (JSON) + cookie      200 ``{"token": JWT}``
``GET  /kbs/v0/resource/<repository>/<type>/<tag>``         200 flattened JWE; cookie or
                                                            ``Authorization: Bearer <token>``
=========================================================  =============================================

Refusals are trustee's ErrorInformation JSON (``{"type": ".../errors/<Kind>", "detail": …}``) with 401, 403
or 404 as ``attest.verifier.service.kbs_protocol`` decides (404/405 ``InvalidRequestPath`` for another path
or method); 413 for a body over ``MAX_BODY`` (an Attestation
carries a 64 KiB quote and a 16 MiB event log, base64), 408 for a body not received within ``BODY_TIMEOUT``
seconds, 503 when the server is saturated (``MAX_IN_FLIGHT`` requests) or its database fails, 500 (one stderr
line) for a fault of the server itself.

A request takes one of the ``MAX_IN_FLIGHT`` slots only once its whole body has arrived: clients that send
headers and then trickle or withhold the body wait on their own coroutine and never crowd out the others.
The bytes of bodies received and not yet answered count against ``MAX_BUFFERED`` across all requests (503
beyond), so many clients sending large bodies at once cannot make the verifier hold more than that.
The connection limits of every tdxsim HTTP server apply (``wire.http_serving``: a connection without a whole
request head within 15 s is closed, header sizes are bounded, no traceback reaches the log).

The server runs on an event loop of its own thread; the protocol's synchronous work (database, DCAP
verification) runs in a small thread pool, so a slow client holds a coroutine, never a worker. TLS and mTLS
use the verifier's ``--tls-*`` files (``wire.tls.ssl_server_context``); plaintext otherwise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from attest.formats.kbs_evidence import SESSION_COOKIE
from attest.verifier.service.kbs_protocol import KbsError, KbsProtocol, Session
from wire.http_serving import plain_server_header, runner_arguments
from wire.tls import TlsConfig, ssl_server_context

PREFIX = "/kbs/v0"
MAX_BODY = 24 << 20
MAX_IN_FLIGHT = 64
BODY_TIMEOUT = 30.0  # seconds for a request body to arrive once its headers have
MAX_BUFFERED = 256 << 20  # bytes of request bodies held at once, all requests together
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _problem(err: KbsError) -> web.Response:
    return web.json_response(err.information(), status=err.status)


class KbsHttpServer:
    """One aiohttp site serving ``protocol`` on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        protocol: KbsProtocol,
        host: str,
        port: int,
        tls: TlsConfig | None = None,
        max_workers: int = 8,
        body_timeout: float = BODY_TIMEOUT,
        max_buffered: int = MAX_BUFFERED,
    ) -> None:
        self.protocol = protocol
        self.body_timeout = body_timeout
        self.max_buffered = max_buffered
        self._buffered = 0  # bytes of bodies held now; these three are touched only on the event loop
        self._held: dict[int, int] = {}  # id(request) -> bytes of its body held
        self._bodies: dict[int, bytes] = {}  # id(request) -> its body, once whole
        self.host = host
        self.requested_port = port
        self.tls = tls
        self.port = 0
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="kbs")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kbs-http", daemon=True)
        self._runner: web.AppRunner | None = None
        self._in_flight: asyncio.Semaphore | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> int:
        """Bind and serve; returns the bound port. A bind failure raises ``OSError`` here."""
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        except BaseException:
            self.stop()
            raise
        return self.port

    async def _start(self) -> None:
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        app = plain_server_header(web.Application(client_max_size=MAX_BODY, middlewares=[self._guard]))
        app.router.add_post(f"{PREFIX}/auth", self._auth)
        app.router.add_post(f"{PREFIX}/attest", self._attest)
        resource = f"{PREFIX}/resource/{{repository}}/{{type}}/{{tag}}"
        app.router.add_get(resource, self._resource, allow_head=False)  # a HEAD would release it unseen
        self._runner = web.AppRunner(app, **runner_arguments("tdxsim verifier: kbs"))
        await self._runner.setup()
        ssl_context = ssl_server_context(self.tls) if self.tls is not None else None
        host = self.host.strip("[]")
        site = web.TCPSite(self._runner, host, self.requested_port, ssl_context=ssl_context, reuse_port=False)
        await site.start()
        server = site._server  # aiohttp exposes the bound sockets only here
        sockets = getattr(server, "sockets", None) or ()
        self.port = int(sockets[0].getsockname()[1]) if sockets else self.requested_port

    def stop(self, grace: float = 2.0) -> None:
        """Stop accepting, let requests in progress finish for ``grace`` seconds, end the loop and pool."""
        if self._runner is not None and self._loop.is_running():
            for step in (self._runner.shutdown, self._runner.cleanup):
                future = asyncio.run_coroutine_threadsafe(step(), self._loop)
                with contextlib.suppress(TimeoutError, concurrent.futures.TimeoutError):
                    future.result(grace + 1)
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread.is_alive():
            self._thread.join(5)
        # Calls already in the verifier core finish before the caller closes the store under them.
        self._pool.shutdown(wait=True, cancel_futures=True)

    # --- plumbing -----------------------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every request: its body first (408 when it does not arrive in time, 413 when too large, 503 when
        the bodies held reach ``max_buffered``), then at most ``MAX_IN_FLIGHT`` at once (503 beyond),
        ``KbsError`` as ErrorInformation, anything unexpected 500 with one stderr line."""
        self._held[id(request)] = 0
        try:
            return await self._guarded(request, handler)
        finally:
            self._buffered -= self._held.pop(id(request))
            self._bodies.pop(id(request), None)

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        assert self._in_flight is not None
        if request.match_info.http_exception is None and request.body_exists:
            try:
                body = await asyncio.wait_for(self._read_body(request), self.body_timeout)
                self._bodies[id(request)] = body
            except KbsError as err:
                return _problem(err)
            except TimeoutError:
                detail = f"request body not received within {self.body_timeout:g} s"
                return _problem(KbsError(408, "SerdeError", detail))
            except (ConnectionError, HttpProcessingError) as err:  # the client left, or broke its framing
                detail = f"request body not received: {type(err).__name__}"
                return _problem(KbsError(400, "SerdeError", detail))
        if self._in_flight.locked():
            return _problem(KbsError(503, "AttestationError", "the kbs is busy: too many requests in flight"))
        async with self._in_flight:
            try:
                return await handler(request)
            except KbsError as err:
                return _problem(err)
            except web.HTTPRequestEntityTooLarge:
                return _problem(KbsError(413, "SerdeError", f"request body larger than {MAX_BODY} bytes"))
            except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
                what = f"no {request.method} {request.path[:128]} in the kbs protocol"
                return _problem(KbsError(exc.status, "InvalidRequestPath", what))
            except web.HTTPException:
                raise
            except Exception as err:
                line = f"tdxsim verifier: kbs {request.path}: {type(err).__name__}: {err}"
                print(line.replace("\n", " "), file=sys.stderr, flush=True)
                return _problem(KbsError(500, "AttestationError", "internal error of the kbs"))

    async def _read_body(self, request: web.Request) -> bytes:
        """The body as it arrives (decoded from its Content-Encoding), each chunk counted in the request's
        held bytes and the server's total before it is kept."""
        body = bytearray()
        async for chunk in request.content.iter_any():
            if len(body) + len(chunk) > MAX_BODY:
                raise KbsError(413, "SerdeError", f"request body larger than {MAX_BODY} bytes")
            if self._buffered + len(chunk) > self.max_buffered:
                raise KbsError(503, "AttestationError", "the kbs is busy: too many request bodies in flight")
            self._buffered += len(chunk)
            self._held[id(request)] += len(chunk)
            body += chunk
        return bytes(body)

    async def _run(self, work: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    def _with_cookie(self, response: web.Response, session: Session) -> web.Response:
        max_age = max(0, int(session.expires_at - self.protocol.core.clock()))
        response.set_cookie(
            SESSION_COOKIE,
            session.id,
            path=PREFIX,
            max_age=max_age,
            httponly=True,
            samesite="Strict",
            secure=self.tls is not None,
        )
        return response

    # --- endpoints ----------------------------------------------------------------------------------------

    async def _auth(self, request: web.Request) -> web.StreamResponse:
        body = self._bodies.get(id(request), b"")
        session, challenge = await self._run(lambda: self.protocol.auth(body))
        return self._with_cookie(web.json_response(challenge), session)

    async def _attest(self, request: web.Request) -> web.StreamResponse:
        body = self._bodies.get(id(request), b"")
        cookie = request.cookies.get(SESSION_COOKIE)
        session, token = await self._run(lambda: self.protocol.attest(cookie, body))
        return self._with_cookie(web.json_response({"token": token}), session)

    async def _resource(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        path = f"{info['repository']}/{info['type']}/{info['tag']}"
        cookie = request.cookies.get(SESSION_COOKIE)
        authorization = request.headers.get("Authorization")
        jwe = await self._run(lambda: self.protocol.resource(path, cookie, authorization))
        return web.Response(text=json.dumps(jwe), content_type="application/json")
