"""Collateral from a PCCS or Intel's PCS by URL, as real verifiers fetch it, and a cache that keeps it until
its ``nextUpdate`` (docs/attestation.md §17).

``PccsClient(url).fetch(fmspc, pck_ca)`` makes the requests dcap-qvl's ``collateral.rs`` makes, against the
Intel PCS API v4 paths: ``/sgx/certification/v4/pckcrl?ca=…&encoding=der`` (``SGX-PCK-CRL-Issuer-Chain``),
``/tdx/certification/v4/tcb?fmspc=…`` (``TCB-Info-Issuer-Chain``, or v3's ``SGX-TCB-Info-Issuer-Chain``),
``/tdx/certification/v4/qe/identity`` (``SGX-Enclave-Identity-Issuer-Chain``), and the root CA CRL from a
PCCS's ``/sgx/certification/v4/rootcacrl`` (hex) or, from Intel's PCS, which has no such path, from the CRL
distribution point of the root certificate (DER). Issuer chains are URL-decoded; the signed ``tcbInfo`` and
``enclaveIdentity`` are cut out of the bodies as they were sent (``slice_json_member``), never re-serialised.
The result goes through ``parse_collateral`` like a collateral file, so a PCCS's answer and a file are one
code path from there on.

The client is synchronous (``urllib``, the standard library's): the verifier's checks run on its worker
threads, which may block. The whole fetch has one deadline, enforced by a watchdog that shuts the fetch's
connections down when it passes (a server trickling its headers or body a byte at a time cannot stretch it);
a body is read up to ``MAX_BODY`` bytes. Only http and https are spoken and redirects are not followed (a
PCCS and Intel's PCS answer directly): a hostile PCCS cannot send the verifier to a ``file:``, ``ftp:`` or
``data:`` URL, nor can the root certificate's CRL distribution point. Failures are ``PccsUnavailable`` (no
answer, an error status, an answer that is not collateral: reason ``PCCS_UNAVAILABLE``) or
``CollateralNotFound`` (the PCCS says 404 for this FMSPC or CA), never a verdict.

``PccsCollateral`` caches per (FMSPC, PCK CA): an entry is used until the earliest ``nextUpdate`` of its TCB
Info, QE Identity and CRLs, then fetched again; concurrent requests for one key share one fetch. Collateral
that is already past its ``nextUpdate`` is kept ``EXPIRED_RETRY`` seconds, so expired collateral (which
verification refuses) does not make every quote a fetch. A failed fetch is not cached.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from cryptography import x509

from attest.errors import AttestError
from attest.formats.collateral import (
    Collateral,
    parse_collateral,
    parse_qe_identity,
    parse_tcb_info,
    slice_json_member,
)
from attest.jsonutil import loads_json
from attest.verifier.dcap.chains import load_certificates

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
DEFAULT_TIMEOUT = 10.0  # seconds for the whole fetch (four or five requests)
MAX_BODY = 1 << 20  # Intel's largest answers (TCB Info, CRLs) are tens of KiB
EXPIRED_RETRY = 60  # seconds expired collateral is kept before it is fetched again
MAX_ENTRIES = 256


class PccsError(Exception):
    """A fetch that gave no collateral; ``reason`` is the ErrorInfo reason, ``metadata`` its details."""

    reason = "PCCS_UNAVAILABLE"

    def __init__(self, message: str, **metadata: str) -> None:
        super().__init__(message)
        self.metadata = metadata


class PccsUnavailable(PccsError):
    """No usable answer: unreachable, timed out, an error status, or a body that is not the collateral."""


class CollateralNotFound(PccsError):
    """The PCCS has nothing for this FMSPC or PCK CA (404)."""

    reason = "COLLATERAL_NOT_FOUND"


@dataclass(frozen=True)
class FetchedCollateral:
    collateral: Collateral
    #: dcap-qvl ``QuoteCollateralV3`` JSON of the same items (what ``tdxsim quote verify`` reads).
    json_text: str
    #: The earliest ``nextUpdate`` of TCB Info, QE Identity, PCK CRL and root CA CRL (unix seconds).
    next_update: int


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Message
    body: bytes


def base_url(url: str) -> str:
    """``url`` without a trailing ``/`` or API prefix (``…/sgx/certification/v4``), as dcap-qvl takes it;
    ValueError unless it is an http(s) URL with a host."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"pccs url must be http(s)://HOST[:PORT][/PATH], got {url!r}")
    base = url.strip().rstrip("/")
    for suffix in ("/sgx/certification/v4", "/tdx/certification/v4"):
        base = base.removesuffix(suffix)
    return base


class PccsClient:
    """Fetches the collateral of one FMSPC from the PCCS or PCS at ``url``. ``ca_file``: PEM CAs trusted for
    an https URL (default: the system's). ``timeout``: seconds for one whole fetch."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT, ca_file: str | None = None) -> None:
        self.url = base_url(url)
        self.timeout = timeout
        self.is_intel_pcs = self.url.startswith(INTEL_PCS_URL)
        https = self.url.startswith("https")
        context = ssl.create_default_context(cafile=ca_file) if https or ca_file is not None else None
        self._opener = urllib.request.OpenerDirector()  # http(s) only; no redirect or error handlers
        for handler in (urllib.request.ProxyHandler(), _HttpHandler(), _HttpsHandler(context=context)):
            self._opener.add_handler(handler)

    def _get(self, url: str, deadline: float) -> _Answer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PccsUnavailable(f"{self.url} did not answer within {self.timeout:g} s", pccs=self.url)
        request = urllib.request.Request(url, headers={"Accept": "*/*", "User-Agent": "tdxsim-verifier"})
        try:
            with self._opener.open(request, timeout=remaining) as response:
                body = _read_bounded(response, url, self.url)
                if time.monotonic() >= deadline:
                    raise TimeoutError
                if response.length:  # what Content-Length promised and the connection did not bring
                    raise http.client.IncompleteRead(body, response.length)
                return _Answer(response.status, response.headers, body)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            if time.monotonic() >= deadline:
                raise PccsUnavailable(
                    f"{_path(url)}: timed out, no complete answer within {self.timeout:g} s", pccs=self.url
                ) from None
            why = getattr(err, "reason", err)
            text = _one_line(str(why)) or type(why).__name__
            if isinstance(why, http.client.HTTPException):  # its text may be the server's own bytes
                text = f"{type(why).__name__}: {text}"
            raise PccsUnavailable(f"{_path(url)}: {text}", pccs=self.url) from None

    def _ok(self, answer: _Answer, url: str, what: str) -> _Answer:
        if answer.status == 200:
            return answer
        if answer.status == 404:
            raise CollateralNotFound(f"{self.url} has no {what} (404 for {_path(url)})", pccs=self.url)
        if 300 <= answer.status < 400:
            target = _clip(answer.headers.get("Location", ""))
            raise PccsUnavailable(
                f"{_path(url)}: HTTP {answer.status} to {target!r}, redirects are not followed", pccs=self.url
            )
        raise PccsUnavailable(f"{_path(url)}: HTTP {answer.status}", pccs=self.url)

    def _chain(self, answer: _Answer, *names: str) -> str:
        for name in names:
            value = answer.headers.get(name)
            if value is not None:
                return urllib.parse.unquote(value)
        raise PccsUnavailable(f"{self.url}: the answer lacks the {names[0]} header", pccs=self.url)

    def fetch(self, fmspc: bytes, pck_ca: str, tee: str = "tdx") -> FetchedCollateral:
        """The collateral of platforms of ``fmspc`` whose PCK leaves ``pck_ca`` issued."""
        deadline = time.monotonic() + self.timeout
        with _watchdog(self.timeout):
            return self._fetch(fmspc, pck_ca, tee, deadline)

    def _fetch(self, fmspc: bytes, pck_ca: str, tee: str, deadline: float) -> FetchedCollateral:
        fmspc_hex = fmspc.hex().upper()
        api = f"{self.url}/{tee}/certification/v4"
        url = f"{self.url}/sgx/certification/v4/pckcrl?ca={pck_ca}&encoding=der"
        crl = self._ok(self._get(url, deadline), url, f"pck crl of the {pck_ca} ca")
        pck_crl_chain = self._chain(crl, "SGX-PCK-CRL-Issuer-Chain")
        url = f"{api}/tcb?fmspc={fmspc_hex}"
        tcb = self._ok(self._get(url, deadline), url, f"tcb info for fmspc {fmspc_hex}")
        tcb_chain = self._chain(tcb, "TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
        url = f"{api}/qe/identity"
        qe = self._ok(self._get(url, deadline), url, "qe identity")
        qe_chain = self._chain(qe, "SGX-Enclave-Identity-Issuer-Chain")
        root_crl = self._root_ca_crl(qe_chain, deadline)
        try:
            tcb_text, tcb_signature = _signed(tcb.body, "tcbInfo")
            qe_text, qe_signature = _signed(qe.body, "enclaveIdentity")
            doc = {
                "pck_crl_issuer_chain": pck_crl_chain,
                "root_ca_crl": root_crl.hex(),
                "pck_crl": _der_or_hex(crl.body).hex(),
                "tcb_info_issuer_chain": tcb_chain,
                "tcb_info": tcb_text,
                "tcb_info_signature": tcb_signature,
                "qe_identity_issuer_chain": qe_chain,
                "qe_identity": qe_text,
                "qe_identity_signature": qe_signature,
            }
            text = json.dumps(doc, indent=2) + "\n"
            collateral = parse_collateral(text)
            next_update = min(
                parse_tcb_info(collateral.tcb_info_text).next_update,
                parse_qe_identity(collateral.qe_identity_text).next_update,
                _crl_next_update(collateral.pck_crl),
                _crl_next_update(collateral.root_ca_crl),
            )
        except (AttestError, ValueError, KeyError, TypeError) as err:
            raise PccsUnavailable(
                f"{self.url} sent no usable collateral: {_one_line(str(err))}", pccs=self.url
            ) from None
        return FetchedCollateral(collateral, text, next_update)

    def _root_ca_crl(self, qe_chain: str, deadline: float) -> bytes:
        """A PCCS's ``rootcacrl`` (hex; DER accepted); from Intel's PCS, or when the PCCS has none, the
        root certificate's CRL distribution point (DER)."""
        if not self.is_intel_pcs:
            url = f"{self.url}/sgx/certification/v4/rootcacrl"
            answer = self._get(url, deadline)
            if answer.status != 404:
                try:
                    return _der_or_hex(self._ok(answer, url, "root ca crl").body)
                except ValueError as err:
                    why = f"{self.url} sent no usable root ca crl: {_one_line(str(err))}"
                    raise PccsUnavailable(why, pccs=self.url) from None
        try:
            root = load_certificates(qe_chain, "qe identity issuer chain")[-1]
            points = root.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
            url = next(
                str(name.value)
                for point in points
                for name in point.full_name or ()
                if isinstance(name, x509.UniformResourceIdentifier)
            )
        except (AttestError, x509.ExtensionNotFound, StopIteration, ValueError, IndexError):
            raise PccsUnavailable(
                f"{self.url}: no root ca crl and no crl distribution point", pccs=self.url
            ) from None
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise PccsUnavailable(
                f"{self.url}: the root's crl distribution point {_clip(url)!r} is not http(s)", pccs=self.url
            )
        return self._ok(self._get(url, deadline), url, "root ca crl").body


_watched = threading.local()


def _watched_connection(
    address: tuple[str, int], timeout: float | None = None, source_address: tuple[str, int] | None = None
) -> socket.socket:
    """``socket.create_connection`` whose socket the running fetch's watchdog may shut down (through a
    duplicate it owns, so a socket closed and its descriptor reused is never touched)."""
    sock = socket.create_connection(address, timeout, source_address)
    watched: list[socket.socket] | None = getattr(_watched, "sockets", None)
    if watched is not None:
        watched.append(sock.dup())
    return sock


class _HttpConnection(http.client.HTTPConnection):
    def __init__(self, host: str, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._create_connection = _watched_connection


class _HttpsConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._create_connection = _watched_connection


class _HttpHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HttpConnection, req)


class _HttpsHandler(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext | None) -> None:
        super().__init__(context=context)
        self._tls = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HttpsConnection, req, context=self._tls)


@contextlib.contextmanager
def _watchdog(seconds: float) -> Iterator[None]:
    """Shut down every connection opened in this block (on this thread) once ``seconds`` have passed: a
    blocked read then ends, so no server can hold a fetch past its deadline."""
    sockets: list[socket.socket] = []
    fired = threading.Event()

    def cut() -> None:
        fired.set()
        for sock in list(sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    _watched.sockets = sockets
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        _watched.sockets = None
        for sock in sockets:
            sock.close()


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(text: str) -> str:
    """``text`` (which may hold what a server sent) as one printable line of at most 200 characters."""
    line = " ".join(text[:400].split())
    return _clip("".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in line), 200)


def _path(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.netloc}{parts.path}"


def _read_bounded(response: object, url: str, pccs: str) -> bytes:
    read: Callable[[int], bytes] = response.read  # type: ignore[attr-defined]
    body = read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise PccsUnavailable(f"{_path(url)}: answer larger than {MAX_BODY} bytes", pccs=pccs)
    return body


def _der_or_hex(body: bytes) -> bytes:
    """A CRL as a PCCS sends it (hex text) or as Intel's PCS does with ``encoding=der`` (DER)."""
    text = body.strip()
    if text and all(c in b"0123456789abcdefABCDEF" for c in text):
        return bytes.fromhex(text.decode())
    return body


def _signed(body: bytes, member: str) -> tuple[str, str]:
    """The exact text of the signed member and the hex signature of a PCS response body."""
    text = body.decode()
    doc = loads_json(text, member, ValueError)
    signature = doc["signature"] if isinstance(doc, dict) else None
    if not isinstance(signature, str):
        raise ValueError(f"{member} response has no signature")
    return slice_json_member(text, member), signature


def _crl_next_update(der: bytes) -> int:
    crl = x509.load_der_x509_crl(der)
    when = crl.next_update_utc
    if when is None:
        raise ValueError("crl has no nextUpdate")
    return int(when.timestamp())


@dataclass
class _Entry:
    collateral: Collateral
    expires: float


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    entry: _Entry | None = None
    error: PccsError | None = None


class PccsCollateral:
    """The collateral of a PCCS, per (FMSPC, PCK CA), cached until its ``nextUpdate`` (see the module)."""

    def __init__(self, client: PccsClient, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[bytes, str], _Entry] = {}
        self._flights: dict[tuple[bytes, str], _Flight] = {}
        self.fetches = 0

    @property
    def url(self) -> str:
        return self.client.url

    def cached(self) -> Mapping[tuple[bytes, str], float]:
        """What is cached: (FMSPC, PCK CA) -> until when (unix seconds)."""
        with self._lock:
            return {key: entry.expires for key, entry in self._entries.items()}

    def get(self, fmspc: bytes, pck_ca: str) -> Collateral:
        key = (fmspc, pck_ca)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self.clock() < entry.expires:
                return entry.collateral
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            return self._follow(flight)
        try:
            fetched = self.client.fetch(fmspc, pck_ca)
            now = self.clock()
            expires = fetched.next_update if fetched.next_update > now else now + EXPIRED_RETRY
            flight.entry = _Entry(fetched.collateral, expires)
        except PccsError as err:
            flight.error = err
            raise
        finally:
            with self._lock:
                self.fetches += 1
                del self._flights[key]
                if flight.entry is not None:
                    self._entries[key] = flight.entry
                    if len(self._entries) > MAX_ENTRIES:
                        del self._entries[min(self._entries, key=lambda k: self._entries[k].expires)]
            flight.done.set()
        return flight.entry.collateral

    def _follow(self, flight: _Flight) -> Collateral:
        """Wait for the fetch another request started for the same key and share its outcome."""
        if not flight.done.wait(self.client.timeout + 5):
            raise PccsUnavailable(f"{self.url}: a fetch in progress did not finish", pccs=self.url)
        if flight.entry is not None:
            return flight.entry.collateral
        error = flight.error
        if error is None:  # the fetch ended in something other than a PccsError: no answer to share
            raise PccsUnavailable(f"{self.url}: the fetch in progress failed", pccs=self.url)
        raise type(error)(str(error), **error.metadata)
