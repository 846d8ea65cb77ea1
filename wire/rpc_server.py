"""The gRPC server of every tdxsim server process: the model, the limits and the request decoding they share
(docs/conventions.md §3, §6, §7).

**Model.** An asyncio server (``grpc.aio``) runs on an event-loop thread of its own; the servicers'
synchronous methods run in a thread pool. The event loop receives every request message, and a method takes a
thread only once its message is complete: calls that send their headers and never their message cost the
server a coroutine each and starve nobody. (A synchronous ``grpc.server`` hands each call to a worker thread
that then blocks reading the message: as many such calls as workers freeze the server, and aborting such a
call from another thread does not free its worker.) Long-lived streams are coroutines too and hold no thread.

**The gate** (:class:`CallGate`, the last interceptor) registers every method with gRPC as request-streaming
over raw bytes and reads the request itself, so that every outcome is a status with an ``ErrorInfo``
(``wire.rpc_status``):

- no request message at all (the client half-closed at once): INVALID_ARGUMENT ``REQUEST_MISSING`` (gRPC
  would leave a unary call unanswered until its deadline);
- a request message over its method's limit (:meth:`Limits.request_limit`): RESOURCE_EXHAUSTED
  ``MESSAGE_TOO_LARGE``, metadata ``limit`` and ``size``. gRPC itself refuses anything over the server's
  largest limit before the gate sees it: RESOURCE_EXHAUSTED without ``ErrorInfo``;
- bytes the request type cannot decode: INVALID_ARGUMENT ``REQUEST_UNDECODABLE`` (gRPC's own answer would be
  INTERNAL "Exception deserializing request!");
- too many calls in service from one client connection, or in the whole server: RESOURCE_EXHAUSTED
  ``TOO_MANY_CALLS_FROM_PEER`` or ``TOO_MANY_CALLS``; too many long-lived streams of one method:
  ``TOO_MANY_STREAMS`` (metadata ``limit``);
- a method the server does not have: UNIMPLEMENTED ``UNKNOWN_METHOD``;
- an exception nothing translated: INTERNAL ``INTERNAL``, logged once on stderr (as ``rpc_status.guard``).

Interceptors placed before the gate (the host's admin check) decide before anything is read or counted; a
refusal of theirs is a :func:`refusal_handler`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import inspect
import sys
import threading
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from wire.rpc_status import INTERNAL_REASON, abort_async
from wire.tls import TlsConfig, add_port

KIB = 1 << 10
MIB = 1 << 20
#: Health checks and reflection requests are a few bytes: the limit of every method a server names none for.
DEFAULT_REQUEST_BYTES = 64 * KIB
HEALTH_WATCH = f"/{health.SERVICE_NAME}/Watch"
REFLECTION_INFO = f"/{reflection.SERVICE_NAME}/ServerReflectionInfo"
#: The long-lived streams every server has, and how many of each may be open at once.
STANDARD_STREAMS: Mapping[str, int] = {HEALTH_WATCH: 8, REFLECTION_INFO: 8}
T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """What the clients of one server may take of it (docs/conventions.md §6).

    A *call* counts from the moment its request message has arrived until its method returns; a call still
    waiting for its message costs a coroutine and counts nowhere. The peer is the client's connection as gRPC
    names it (``ipv4:127.0.0.1:PORT``): every process on loopback shares one address, and gRPC gives every
    Unix-socket client the same name (``unix:``), so Unix-socket clients share only the server-wide limit.
    Long-lived streams (``streams``) count only against their own method's limit, never as calls: the host's
    48 lifelines may all come over one client connection."""

    #: Largest request message by service (``"tdxsim.v1.HostService"``) or by method
    #: (``"/tdxsim.v1.TdGuestService/Echo"``, which wins over its service).
    request_bytes: Mapping[str, int] = field(default_factory=dict)
    #: The limit of every method ``request_bytes`` does not name (health checks, reflection).
    default_request_bytes: int = DEFAULT_REQUEST_BYTES
    #: Largest response message.
    response_bytes: int = 64 * MIB
    #: Calls one client connection may have in service at once.
    calls_per_peer: int = 16
    #: Calls the whole server may have in service at once.
    calls_total: int = 64
    #: Long-lived streaming methods and how many of each may be open at once.
    streams: Mapping[str, int] = field(default_factory=lambda: dict(STANDARD_STREAMS))

    def __post_init__(self) -> None:
        sizes = [self.default_request_bytes, self.response_bytes, *self.request_bytes.values()]
        counts = [self.calls_per_peer, self.calls_total, *self.streams.values()]
        if min(sizes) < 1 or min(counts) < 1:
            raise ValueError("every limit must be positive")

    def request_limit(self, method: str) -> int:
        """The largest request message ``method`` (``/package.Service/Method``) accepts."""
        if method in self.request_bytes:
            return self.request_bytes[method]
        service = method.split("/")[1] if method.count("/") == 2 else ""
        return self.request_bytes.get(service, self.default_request_bytes)

    @property
    def largest_request(self) -> int:
        """The server-wide receive limit gRPC enforces itself, before the gate's per-method limits."""
        return max([self.default_request_bytes, *self.request_bytes.values()])


def server_options(limits: Limits) -> list[tuple[str, int]]:
    """The channel arguments of every server: gRPC's message limits, and no ``SO_REUSEPORT``, so that binding
    an address another server listens on fails instead of sharing its connections."""
    return [
        ("grpc.max_receive_message_length", limits.largest_request),
        ("grpc.max_send_message_length", limits.response_bytes),
        ("grpc.so_reuseport", 0),
    ]


# ---- counting --------------------------------------------------------------------------------------------


def peer_key(peer: str) -> str | None:
    """The key of the per-peer limit: the client's connection for TCP, None where gRPC cannot tell Unix-socket
    clients apart."""
    return peer if peer.startswith(("ipv4:", "ipv6:")) else None


class _Slots:
    """Calls in service per peer and in all, and open streams per method. Released from pool threads too."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._lock = threading.Lock()
        self._total = 0
        self._peers: Counter[str] = Counter()
        self._streams: Counter[str] = Counter()

    def take_call(self, peer: str | None) -> tuple[str, str, int] | None:
        """Count one more call of ``peer``, or (reason, message, limit) of the refusal."""
        limits = self._limits
        with self._lock:
            if peer is not None and self._peers[peer] >= limits.calls_per_peer:
                message = f"this client has {limits.calls_per_peer} calls in service already; wait for one"
                return "TOO_MANY_CALLS_FROM_PEER", message, limits.calls_per_peer
            if self._total >= limits.calls_total:
                message = f"the server has {limits.calls_total} calls in service already; try again"
                return "TOO_MANY_CALLS", message, limits.calls_total
            self._total += 1
            if peer is not None:
                self._peers[peer] += 1
        return None

    def give_call(self, peer: str | None) -> None:
        with self._lock:
            self._total -= 1
            if peer is not None:
                self._peers[peer] -= 1
                if not self._peers[peer]:
                    del self._peers[peer]

    def take_stream(self, method: str, limit: int) -> tuple[str, str, int] | None:
        with self._lock:
            if self._streams[method] >= limit:
                return "TOO_MANY_STREAMS", f"{limit} {method} streams are open already; close one", limit
            self._streams[method] += 1
        return None

    def give_stream(self, method: str) -> None:
        with self._lock:
            self._streams[method] -= 1

    def in_service(self) -> int:
        with self._lock:
            return self._total


# ---- synchronous servicer methods --------------------------------------------------------------------------


class _Aborted(Exception):
    """A synchronous servicer method aborted its call; the event loop sends the status."""


class _Undecodable(Exception):
    """The request bytes do not decode as the method's request message."""


class SyncContext:
    """What a synchronous servicer method sees of its call while it runs in the pool: the parts of
    ``grpc.ServicerContext`` tdxsim's servicers use. An abort is recorded and raised; the event loop sends
    it."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: tuple[tuple[str, str | bytes], ...] = ()
        self._cancelled = False

    def invocation_metadata(self) -> Any:
        return self._context.invocation_metadata()

    def peer(self) -> str:
        return str(self._context.peer())

    def time_remaining(self) -> float | None:
        remaining = self._context.time_remaining()
        return None if remaining is None else float(remaining)

    def is_active(self) -> bool:
        """False once the client has cancelled, its deadline has passed or the call has ended: the method may
        stop early, its result is not wanted."""
        return not self._cancelled and not self._context.done()

    def cancel(self) -> None:
        """On the event loop: the call was cancelled while the method ran."""
        self._cancelled = True

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self._trailing = tuple(metadata)

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        self._code, self._details = code, details
        raise _Aborted(details)

    def abort_with_status(self, status: grpc.Status) -> NoReturn:
        self._trailing = tuple(status.trailing_metadata or ())
        self.abort(status.code, status.details)

    async def send_abort(self) -> None:
        """On the event loop: end the call with the status the method aborted with, if it did."""
        if self._code is not None:
            await self._context.abort(self._code, self._details, self._trailing)


async def run_sync(
    context: Any,
    step: Callable[[Any, SyncContext], T],
    request: Any,
    undo: Callable[[T], object] | None = None,
) -> T:
    """From a coroutine method: run one synchronous step ``step(request, context)`` (a ``guard``-decorated
    method, say) in the server's thread pool; an abort inside it ends the call with its status. The step
    always runs to its end: if the call is cancelled meanwhile (the client went away), ``undo(result)`` then
    runs in the pool after a step that succeeded, so that what the step took (a lifeline, a feed slot) is
    given back."""
    sync_context = SyncContext(context)
    loop = asyncio.get_running_loop()
    running = loop.run_in_executor(None, step, request, sync_context)
    try:
        result = await asyncio.shield(running)
    except asyncio.CancelledError:
        sync_context.cancel()
        if undo is not None:
            running.add_done_callback(functools.partial(_undo_after, loop, undo))
        raise
    except _Aborted:
        await sync_context.send_abort()
        raise
    await sync_context.send_abort()  # an abort the step caught and swallowed still ends the call
    return result


def _undo_after(
    loop: asyncio.AbstractEventLoop, undo: Callable[[T], object], done: asyncio.Future[T]
) -> None:
    if not done.cancelled() and done.exception() is None:
        loop.run_in_executor(None, undo, done.result())


# ---- the gate ----------------------------------------------------------------------------------------------


def refusal_handler(
    code: grpc.StatusCode, message: str, reason: str, metadata: Mapping[str, str] | None = None
) -> Any:
    """A method handler that refuses its call at once with ``code`` and an ``ErrorInfo``, reading nothing."""

    async def refuse(requests: Any, context: Any) -> None:
        await abort_async(context, code, message, reason, metadata)

    return grpc.stream_stream_rpc_method_handler(refuse)


class _Method:
    """One method behind the gate: its limit, its decoding, its counting, and where its servicer runs."""

    def __init__(self, gate: CallGate, path: str, handler: Any) -> None:
        self.gate = gate
        self.path = path
        self.behavior = (
            handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
        )
        self.decode: Callable[[bytes], Any] | None = handler.request_deserializer
        self.request_streaming = bool(handler.request_streaming)
        self.response_streaming = bool(handler.response_streaming)
        self.limit = gate.limits.request_limit(path)
        self.stream_limit = gate.limits.streams.get(path)
        self.coroutine = inspect.iscoroutinefunction(self.behavior) or inspect.isasyncgenfunction(
            self.behavior
        )
        if (self.request_streaming or self.response_streaming) and not self.coroutine:
            raise TypeError(f"{path}: a streaming method must be a coroutine or an async generator")

    def handler(self, response_serializer: Any) -> Any:
        if self.response_streaming:
            return grpc.stream_stream_rpc_method_handler(self.streaming, None, response_serializer)
        return grpc.stream_unary_rpc_method_handler(self.unary, None, response_serializer)

    # -- the two call shapes gRPC sees --

    async def unary(self, requests: Any, context: Any) -> Any:
        try:
            if self.request_streaming:
                release = await self._admit(context)
                try:
                    return await self.behavior(self._requests(context), context)
                finally:
                    release()
            raw = await self._receive(context)
            release = await self._admit(context)
            if not self.coroutine:
                return await self._in_pool(context, raw, release)
            try:
                return await self.behavior(await self._decode(context, raw), context)
            finally:
                release()
        except Exception as err:
            await self._fault(context, err)

    async def streaming(self, requests: Any, context: Any) -> None:
        try:
            if self.request_streaming:
                source: Any = self._requests(context)
            else:
                source = await self._decode(context, await self._receive(context))
            release = await self._admit(context)
            try:
                if inspect.isasyncgenfunction(self.behavior):
                    async with contextlib.aclosing(self.behavior(source, context)) as responses:
                        async for response in responses:
                            await context.write(response)
                else:
                    await self.behavior(source, context)
            finally:
                release()
        except Exception as err:
            await self._fault(context, err)

    # -- the steps --

    async def _receive(self, context: Any) -> bytes:
        raw = await context.read()
        if raw is grpc.aio.EOF:
            message = f"{self.path} takes one request message and the client sent none"
            await abort_async(context, grpc.StatusCode.INVALID_ARGUMENT, message, "REQUEST_MISSING")
        await self._check_size(context, raw)
        return bytes(raw)

    async def _requests(self, context: Any) -> AsyncIterator[Any]:
        while True:
            raw = await context.read()
            if raw is grpc.aio.EOF:
                return
            await self._check_size(context, raw)
            yield await self._decode(context, raw)

    async def _check_size(self, context: Any, raw: bytes) -> None:
        if len(raw) > self.limit:
            message = f"a {self.path} request may have {self.limit} bytes, this one has {len(raw)}"
            metadata = {"limit": str(self.limit), "size": str(len(raw))}
            await abort_async(
                context, grpc.StatusCode.RESOURCE_EXHAUSTED, message, "MESSAGE_TOO_LARGE", metadata
            )

    async def _decode(self, context: Any, raw: bytes) -> Any:
        try:
            return self.decode(raw) if self.decode is not None else raw
        except DecodeError as err:
            await self._undecodable(context, err)

    async def _undecodable(self, context: Any, err: Exception) -> NoReturn:
        message = f"the request is not a {self.path} request message: {err}"
        await abort_async(context, grpc.StatusCode.INVALID_ARGUMENT, message, "REQUEST_UNDECODABLE")

    async def _admit(self, context: Any) -> Callable[[], None]:
        """Count the call (or stream), or refuse it; returns what gives the slot back."""
        slots = self.gate.slots
        if self.stream_limit is not None:
            refusal = slots.take_stream(self.path, self.stream_limit)
            release = functools.partial(slots.give_stream, self.path)
        else:
            peer = peer_key(str(context.peer()))
            refusal = slots.take_call(peer)
            release = functools.partial(slots.give_call, peer)
        if refusal is not None:
            reason, message, limit = refusal
            metadata = {"limit": str(limit)}
            await abort_async(context, grpc.StatusCode.RESOURCE_EXHAUSTED, message, reason, metadata)
        return release

    async def _in_pool(self, context: Any, raw: bytes, release: Callable[[], None]) -> Any:
        """Decode and run a synchronous method in the pool. The slot is given back when the method returns,
        even if the client has gone before: a cancelled call must not let more work in than the limits say."""
        sync_context = SyncContext(context)
        decode, behavior = self.decode, self.behavior

        def job() -> Any:
            try:
                request = decode(raw) if decode is not None else raw
            except DecodeError as err:
                raise _Undecodable(str(err)) from None
            return behavior(request, sync_context)

        try:
            future = self.gate.pool.submit(job)
        except RuntimeError:  # the pool is shut down: the server is stopping
            release()
            raise
        future.add_done_callback(lambda _done: release())
        try:
            response = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            sync_context.cancel()
            raise
        except _Undecodable as err:
            await self._undecodable(context, err)
        except _Aborted:
            await sync_context.send_abort()
            raise
        await sync_context.send_abort()
        return response

    async def _fault(self, context: Any, err: Exception) -> None:
        """An exception that is not a refusal: the gRPC machinery's own pass through; anything else is a fault
        of the server, INTERNAL and logged once."""
        if isinstance(err, grpc.aio.AbortError | grpc.aio.UsageError) or context.done():
            raise err
        print(f"{self.gate.name}: {self.path}: internal error: {type(err).__name__}: {err}", file=sys.stderr)
        traceback.print_exception(err, file=sys.stderr)
        sys.stderr.flush()
        await abort_async(
            context, grpc.StatusCode.INTERNAL, f"internal error in {self.path}", INTERNAL_REASON
        )


class CallGate(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The last interceptor of every server: every method it lets through is read, limited, counted and
    decoded by it (the module's docstring lists what it answers)."""

    def __init__(self, name: str, limits: Limits, pool: futures.ThreadPoolExecutor) -> None:
        self.name = name
        self.limits = limits
        self.pool = pool
        self.slots = _Slots(limits)
        self._methods: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = await continuation(details)
        path = str(details.method)
        if handler is None:
            return refusal_handler(grpc.StatusCode.UNIMPLEMENTED, f"no method {path}", "UNKNOWN_METHOD")
        known = self._methods.get(path)
        if known is not None and known[0] is handler:
            return known[1]
        gated = _Method(self, path, handler).handler(handler.response_serializer)
        self._methods[path] = (handler, gated)
        return gated


# ---- the server ------------------------------------------------------------------------------------------


class HealthControl:
    """The server's health service, driven from synchronous code."""

    def __init__(self, loop: asyncio.AbstractEventLoop, servicer: Any, services: Sequence[str] = ()) -> None:
        self._loop = loop
        self._servicer = servicer
        self._services = (*services, "")
        self._wanted = health_pb2.HealthCheckResponse.SERVING

    def set_serving(self, serving: bool) -> None:
        """The server's services and ``""`` SERVING or NOT_SERVING from now on (ignored once the server is
        shutting down). Does not wait: callable from any thread, the event loop's included."""
        statuses = health_pb2.HealthCheckResponse
        self._wanted = statuses.SERVING if serving else statuses.NOT_SERVING

        async def apply() -> None:  # the latest wish, however the loop interleaves two of them
            for service in self._services:
                await self._servicer.set(service, self._wanted)

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(apply(), self._loop)

    def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING from now on (before the server stops)."""
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._servicer.enter_graceful_shutdown(), self._loop).result(5)


class RpcServer:
    """A started server on its own event-loop thread: the port it bound, its health, and :meth:`stop`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        server: Any,
        pool: futures.ThreadPoolExecutor,
        health_control: HealthControl,
        port: int,
        gate: CallGate,
    ) -> None:
        self._loop = loop
        self._server = server
        self._pool = pool
        self.health = health_control
        self.port = port
        self.gate = gate
        self._lock = threading.Lock()
        self._stopped: threading.Event | None = None

    def stop(self, grace: float | None) -> threading.Event:
        """Refuse new calls (UNAVAILABLE), give calls in flight ``grace`` seconds, then cancel them; the event
        is set once the server has stopped. Stopping twice returns the first stop's event."""
        with self._lock:
            if self._stopped is not None:
                return self._stopped
            self._stopped = stopped = threading.Event()

        async def shutdown() -> None:
            await self._server.stop(grace)
            others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            if others:  # cancelled calls finishing their clean-up (a lifeline destroying its TD)
                await asyncio.wait(others, timeout=1.0)

        def finished(_done: Any) -> None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            stopped.set()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).add_done_callback(finished)
        return stopped


def _quiet_poller_teardown(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop's exception handler: gRPC's completion-queue poller may still fire once after the server
    has shut its queue down, and then fails with EBADF (``PollerCompletionQueue._handle_events``). That is
    the end of a stopped server, not a fault: it is not logged. Anything else goes to asyncio's handler."""
    err = context.get("exception")
    if isinstance(err, OSError) and err.errno == errno.EBADF:
        frames = traceback.extract_tb(err.__traceback__)
        if any(frame.name.endswith("_handle_events") for frame in frames):
            return
    loop.default_exception_handler(context)


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.set_exception_handler(_quiet_poller_teardown)
    try:
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


def start_server(
    address: str,
    *,
    name: str,
    services: Sequence[str],
    add_servicers: Callable[[Any], None],
    limits: Limits,
    max_workers: int,
    tls: TlsConfig | None = None,
    interceptors: Sequence[Any] = (),
) -> RpcServer:
    """Build, bind and start a server: ``add_servicers(server)`` registers the services named ``services``,
    which health reports SERVING and reflection lists with health and reflection themselves; synchronous
    servicer methods run in a pool of ``max_workers`` threads; ``interceptors`` run before the gate. Raises
    RuntimeError or OSError when ``address`` cannot be bound (TLS with ``tls``, plaintext without)."""
    pool = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"{name} rpc")
    loop = asyncio.new_event_loop()
    loop.set_default_executor(pool)
    thread = threading.Thread(target=_run_loop, args=(loop,), name=f"{name} grpc", daemon=True)
    thread.start()
    gate = CallGate(name, limits, pool)

    async def build() -> tuple[Any, Any, int]:
        server = grpc.aio.server(
            migration_thread_pool=pool, interceptors=[*interceptors, gate], options=server_options(limits)
        )
        add_servicers(server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        for service in (*services, ""):
            await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection([*services, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        port = add_port(server, address, tls)
        if port == 0:
            raise OSError(f"cannot bind {address}")
        await server.start()
        return server, health_servicer, port

    try:
        server, health_servicer, port = asyncio.run_coroutine_threadsafe(build(), loop).result()
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        pool.shutdown(wait=False)
        raise
    return RpcServer(loop, server, pool, HealthControl(loop, health_servicer, services), port, gate)
