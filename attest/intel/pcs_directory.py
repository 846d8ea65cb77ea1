"""The simulated Intel PCS on disk: ``init_pki(directory, options)`` creates it, ``load_pki(directory)`` reads
it.

docs/attestation.md §6 (PCK hierarchy and SGX extension), §9 (collateral, dcap-qvl ``QuoteCollateralV3``), §15
("Simulated PKI"). Directory layout (keys PEM PKCS#8, mode 0600; certificates PEM; CRLs DER)::

    pki.json                         manifest: format, anchor time, options, PCK CA kind, platforms
    root_ca.pem  root_ca.key         the simulated "Intel SGX Root CA" (self-signed, tdxsim's own key)
    pck_platform_ca.pem  .key        PCK Platform CA (issued by the root); pck_processor_ca.* for SGX type 0
    tcb_signing.pem  .key            signer of TCB Info / QE Identity (the rogue one under ``wrong_issuer``)
    tcb_signing_chain.pem            its issuer chain as shipped in the collateral (signer, then root)
    root_ca.crl  pck_platform_ca.crl root CA CRL (root-signed), PCK CRL (PCK-CA-signed; pck_processor_ca.crl)
    tcb_info.json  qe_identity.json  Intel PCS response bodies ({"tcbInfo":…,"signature":…})
    collateral.json                  dcap-qvl QuoteCollateralV3 JSON for the platforms' FMSPC
    platforms/N/pck.pem  pck.key     PCK leaf of host platform N and its key (the host's QE signs with it)
    platforms/N/pck_chain.pem        leaf, Platform CA, root: the QE's certification data type 5

All platforms share the simulated platform model (``attest.intel.identity``: one FMSPC, one TCB), so one
collateral
serves them; each has its own PPID and PCK key.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attest.errors import AttestError
from attest.formats import pck_names, x509_input
from attest.formats.collateral import TCB_STATUSES
from attest.formats.pck_extension import SCALABLE_CONFIGURATION, PckExtension
from attest.intel import certificates as ca
from attest.intel import identity as P
from attest.intel.ecdsa_keys import KeySource, load_private_key_pem, private_key_pem
from attest.intel.signed_collateral import (
    CollateralSpec,
    SignedJson,
    qe_identity_text,
    quote_collateral_v3_json,
    sign_json,
    tcb_info_text,
)

FORMAT = "tdxsim-pki/1"
MANIFEST = "pki.json"
HOUR = 3_600
DAY = 86_400
YEAR = 365 * DAY
ISV_TCB_STATUSES = ("UpToDate", "OutOfDate", "Revoked")  # QE and module levels (docs/attestation.md §8)
INTEL_ROOT_NOT_AFTER = 2_524_607_999  # 2049-12-31T23:59:59Z, the end of Intel's SGX Root CA
CERT_BACKDATE = DAY  # certificates start a day before the anchor: tolerant of clock skew between processes
COLLATERAL_BACKDATE = HOUR  # collateral issueDate / CRL thisUpdate one hour before the anchor


class PkiError(AttestError):
    """Invalid ``PkiOptions``, an existing PKI in the target directory, or an unreadable PKI directory."""


@dataclass(frozen=True)
class PkiOptions:
    """Knobs of the simulated PCS; the defaults give evidence that verifies as UpToDate.

    - ``now``: anchor of every validity window (unix seconds); None = the current time at ``init_pki``.
    - ``platforms``: number of host platforms, each with its own PCK leaf (default 1).
    - ``seed``: None = random keys/serials/PPIDs; bytes = deterministic ones (signatures stay randomized).
    - ``collateral_validity``: seconds from TCB Info / QE Identity / CRL issue to ``nextUpdate`` (30 days,
      Intel's; the root CA CRL lasts at least a year).
    - ``collateral_expired``: TCB Info, QE Identity and both CRLs have ``nextUpdate`` one day before ``now``
      (and were issued ``collateral_validity`` before that). Default False.
    - ``tcb_status`` / ``advisory_ids``: status and advisories of the TCB level matching the platform
      (``UpToDate`` … ``Revoked``, docs/attestation.md §8). Default UpToDate, none.
    - ``qe_tcb_status``: status of the QE Identity level matching the QE's ISVSVN (UpToDate, OutOfDate or
      Revoked). Default UpToDate.
    - ``revoked_platforms``: indexes of platforms whose PCK leaf is listed in the PCK CRL. Default none.
    - ``wrong_issuer``: TCB Info and QE Identity signed by a TCB Signing key issued by a rogue root that has
      the simulated root's name but another key, so their issuer chain does not lead to the trusted root.
    - ``sgx_type``: PCK extension SGX type. 1 (Scalable, the default ``attest.intel.identity.SGX_TYPE``,
      what every TDX platform has) and 2 (Scalable with Integrity): leaves issued by the PCK Platform CA with
      PlatformInstanceID and Configuration. 0 (Standard): leaves issued by the PCK Processor CA without them,
      as Intel issues single-package platforms' PCK certificates (docs/attestation.md §6).
    - ``tcb_evaluation_data_number``: of TCB Info and QE Identity. Default ``attest.intel.identity``'s.
    - ``fmspc``: the platform model's FMSPC (12 hex digits) in every PCK leaf and the TCB Info. Default
      ``attest.intel.identity.FMSPC``; PKIs made with one seed and ``now`` but other FMSPCs and TCB statuses
      share the keys and names of their root and CAs (each PKI signs its own copy of the root certificate,
      so a verifier trusts each ``root_ca.pem``): several platform models of one simulated Intel
      (``tdxsim fleet``).
    """

    now: int | None = None
    platforms: int = 1
    seed: bytes | None = None
    collateral_validity: int = 30 * DAY
    collateral_expired: bool = False
    tcb_status: str = "UpToDate"
    advisory_ids: tuple[str, ...] = ()
    qe_tcb_status: str = "UpToDate"
    revoked_platforms: tuple[int, ...] = ()
    wrong_issuer: bool = False
    sgx_type: int = P.SGX_TYPE
    tcb_evaluation_data_number: int = P.TCB_EVALUATION_DATA_NUMBER
    fmspc: str = P.FMSPC.hex().upper()

    def __post_init__(self) -> None:
        if self.platforms < 1:
            raise PkiError(f"platforms must be >= 1, got {self.platforms}")
        if self.collateral_validity <= COLLATERAL_BACKDATE:
            raise PkiError("collateral_validity must exceed one hour")
        if self.tcb_status not in TCB_STATUSES:
            raise PkiError(f"unknown tcb status {self.tcb_status!r}")
        if self.qe_tcb_status not in ISV_TCB_STATUSES:
            raise PkiError(f"unknown qe tcb status {self.qe_tcb_status!r}")
        bad = [i for i in self.revoked_platforms if not 0 <= i < self.platforms]
        if bad:
            raise PkiError(f"revoked_platforms {bad} out of range 0..{self.platforms - 1}")
        if self.sgx_type not in (0, 1, 2):
            raise PkiError(f"sgx_type must be 0, 1 or 2, got {self.sgx_type}")
        if len(self.fmspc) != 12 or not all(c in "0123456789abcdefABCDEF" for c in self.fmspc):
            raise PkiError(f"fmspc must be 12 hex digits, got {self.fmspc!r}")

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["seed"] = self.seed.hex() if self.seed is not None else None
        doc["advisory_ids"] = list(self.advisory_ids)
        doc["revoked_platforms"] = list(self.revoked_platforms)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PkiOptions:
        values = dict(doc)
        values["seed"] = bytes.fromhex(doc["seed"]) if doc.get("seed") is not None else None
        values["advisory_ids"] = tuple(doc.get("advisory_ids", ()))
        values["revoked_platforms"] = tuple(doc.get("revoked_platforms", ()))
        return cls(**values)


@dataclass(frozen=True)
class PlatformPck:
    """Host platform ``index``: its PCK leaf (with the SGX extension), key, and the chain the QE ships."""

    index: int
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain_pem: bytes  # leaf, Platform CA, root (PEM)
    ppid: bytes

    @property
    def serial_number(self) -> int:
        return self.certificate.serial_number


@dataclass(frozen=True)
class Pki:
    """A loaded simulated PCS; ``collateral_json`` is what a verifier needs next to any platform's quote."""

    directory: Path
    options: PkiOptions
    now: int
    root: ca.Issued
    pck_ca: ca.Issued  # the PCK Platform CA, or the Processor CA for SGX type 0
    tcb_signing: ca.Issued
    tcb_signing_chain_pem: str
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info: SignedJson
    qe_identity: SignedJson
    collateral_json: str
    platforms: tuple[PlatformPck, ...] = field(default_factory=tuple)

    @property
    def pck_ca_kind(self) -> str:
        """``platform`` or ``processor``: which PCK CA issued the leaves (the PCS's ``ca`` parameter)."""
        cn = pck_names.common_name(self.pck_ca.certificate.subject)
        return ca.PCK_CA_PROCESSOR if cn == pck_names.PROCESSOR_CA_CN else ca.PCK_CA_PLATFORM

    @property
    def root_pem(self) -> bytes:
        return self.root.pem

    @property
    def root_der(self) -> bytes:
        """The trust anchor: ``dcap_qvl.verify_with_root_ca(…, root_der, …)``,
        ``attest.verifier.dcap.Verifier``."""
        return self.root.der

    @property
    def tcb_info_window(self) -> tuple[int, int]:
        """``(issueDate, nextUpdate)`` of the TCB Info (QE Identity and PCK CRL share it), unix seconds."""
        doc = json.loads(self.tcb_info.text)
        return _unix(doc["issueDate"]), _unix(doc["nextUpdate"])

    def platform(self, index: int = 0) -> PlatformPck:
        if not 0 <= index < len(self.platforms):
            raise PkiError(f"no platform {index} (have {len(self.platforms)})")
        return self.platforms[index]


def pck_ca_kind(sgx_type: int) -> str:
    """The CA Intel issues a platform's PCK leaf from: the Processor CA for Standard (type 0) platforms, the
    Platform CA for Scalable ones (types 1 and 2)."""
    return ca.PCK_CA_PROCESSOR if sgx_type == P.SGX_TYPE_STANDARD else ca.PCK_CA_PLATFORM


def _pck_ca_stem(kind: str) -> str:
    if kind not in ca.PCK_CA_CNS:
        raise PkiError(f"unknown pck ca {kind!r}")
    return f"pck_{kind}_ca"


def _unix(rfc3339_text: str) -> int:
    return int(dt.datetime.strptime(rfc3339_text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp())


# --- creation -----------------------------------------------------------------------------------------------


def _pem_chain(*issued: ca.Issued) -> str:
    return b"".join(i.pem for i in issued).decode()


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    _write(path, private_key_pem(key), 0o600)


def init_pki(directory: str | os.PathLike[str], options: PkiOptions | None = None) -> Pki:
    """Create the simulated PCS in ``directory`` (created if missing; refused if it already holds a PKI).
    A directory that cannot be created or written (a file, a path under a file, no permission) is a
    ``PkiError`` naming the path."""
    opts = options or PkiOptions()
    root_dir = Path(directory)
    if (root_dir / MANIFEST).exists():
        raise PkiError(f"{root_dir} already holds a pki")
    try:
        root_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PkiError(f"cannot create {root_dir}: {err.strerror or err}") from None
    now = int(time.time()) if opts.now is None else int(opts.now)
    src = KeySource(opts.seed)
    cert_start = now - CERT_BACKDATE
    # The root ends when Intel's does (its validity then encoded as Intel's, UTCTime) unless a PCK CA issued
    # now would outlive it.
    root_end = max(INTEL_ROOT_NOT_AFTER, now + 15 * YEAR)

    root = ca.issue(
        subject=ca.name(pck_names.ROOT_CA_CN),
        key=src.private_key("root"),
        issuer=None,
        serial=src.serial("root"),
        not_before=cert_start,
        not_after=root_end,
        ca_path_length=1,
        is_ca=True,
        crl_url=ca.ROOT_CRL_URL,
    )
    kind = pck_ca_kind(opts.sgx_type)
    pck_ca = ca.issue(
        subject=ca.name(ca.PCK_CA_CNS[kind]),
        key=src.private_key(f"{kind}-ca"),
        issuer=root,
        serial=src.serial(f"{kind}-ca"),
        not_before=cert_start,
        not_after=now + 15 * YEAR,
        ca_path_length=0,
        is_ca=True,
        crl_url=ca.ROOT_CRL_URL,
    )
    tcb_signing = ca.issue(
        subject=ca.name(pck_names.TCB_SIGNING_CN),
        key=src.private_key("tcb-signing"),
        issuer=root,
        serial=src.serial("tcb-signing"),
        not_before=cert_start,
        not_after=now + 7 * YEAR,
        ca_path_length=None,
        is_ca=False,
        crl_url=ca.ROOT_CRL_URL,
    )
    signer, signer_chain = tcb_signing, _pem_chain(tcb_signing, root)
    if opts.wrong_issuer:
        # Same subject names as the genuine root and signer, other keys: only the signatures tell them apart.
        rogue_root = ca.issue(
            subject=ca.name(pck_names.ROOT_CA_CN),
            key=src.private_key("rogue-root"),
            issuer=None,
            serial=src.serial("rogue-root"),
            not_before=cert_start,
            not_after=root_end,
            ca_path_length=1,
            is_ca=True,
            crl_url=ca.ROOT_CRL_URL,
        )
        signer = ca.issue(
            subject=ca.name(pck_names.TCB_SIGNING_CN),
            key=src.private_key("rogue-tcb-signing"),
            issuer=rogue_root,
            serial=src.serial("rogue-tcb-signing"),
            not_before=cert_start,
            not_after=now + 7 * YEAR,
            ca_path_length=None,
            is_ca=False,
            crl_url=ca.ROOT_CRL_URL,
        )
        signer_chain = _pem_chain(signer, rogue_root)

    platforms: list[PlatformPck] = []
    for index in range(opts.platforms):
        ppid = src.identifier(f"ppid:{index}", 16)
        scalable = kind == ca.PCK_CA_PLATFORM  # Platform-CA leaves carry .6 and .7, Processor-CA ones do not
        extension = PckExtension(
            ppid=ppid,
            tcb_components=P.SGX_TCB_COMPONENTS,
            pce_svn=P.PCESVN,
            cpu_svn=P.CPUSVN,
            pce_id=P.PCEID,
            fmspc=bytes.fromhex(opts.fmspc),
            sgx_type=opts.sgx_type,
            platform_instance_id=src.identifier(f"platform-instance:{index}", 16) if scalable else None,
            configuration=SCALABLE_CONFIGURATION if scalable else None,
        )
        leaf = ca.issue(
            subject=ca.name(pck_names.PCK_CN),
            key=src.private_key(f"pck:{index}"),
            issuer=pck_ca,
            serial=src.serial(f"pck:{index}"),
            not_before=cert_start,
            not_after=now + 7 * YEAR,
            ca_path_length=None,
            is_ca=False,
            crl_url=ca.pck_crl_url(kind),
            sgx_extension=extension,
        )
        chain = _pem_chain(leaf, pck_ca, root).encode()
        platforms.append(PlatformPck(index, leaf.certificate, leaf.key, chain, ppid))

    if opts.collateral_expired:
        next_update = now - DAY
        issue = next_update - opts.collateral_validity
        root_crl_next = next_update
    else:
        issue = now - COLLATERAL_BACKDATE
        next_update = issue + opts.collateral_validity
        root_crl_next = issue + max(opts.collateral_validity, YEAR)
    revoked = [platforms[i].serial_number for i in sorted(set(opts.revoked_platforms))]
    root_ca_crl = ca.build_crl(root, [], issue, root_crl_next)
    pck_crl = ca.build_crl(pck_ca, revoked, issue, next_update)
    spec = CollateralSpec(
        issue_date=issue,
        next_update=next_update,
        tcb_status=opts.tcb_status,
        advisory_ids=opts.advisory_ids,
        qe_tcb_status=opts.qe_tcb_status,
        tcb_evaluation_data_number=opts.tcb_evaluation_data_number,
        fmspc=bytes.fromhex(opts.fmspc),
    )
    tcb_info = sign_json(tcb_info_text(spec), signer.key)
    qe_identity = sign_json(qe_identity_text(spec), signer.key)
    collateral = quote_collateral_v3_json(
        pck_crl_issuer_chain=_pem_chain(pck_ca, root),
        root_ca_crl=root_ca_crl,
        pck_crl=pck_crl,
        tcb_info_issuer_chain=signer_chain,
        tcb_info=tcb_info,
        qe_identity_issuer_chain=signer_chain,
        qe_identity=qe_identity,
    )

    pki = Pki(
        directory=root_dir,
        options=opts,
        now=now,
        root=root,
        pck_ca=pck_ca,
        tcb_signing=signer,
        tcb_signing_chain_pem=signer_chain,
        root_ca_crl=root_ca_crl,
        pck_crl=pck_crl,
        tcb_info=tcb_info,
        qe_identity=qe_identity,
        collateral_json=collateral,
        platforms=tuple(platforms),
    )
    try:
        _save(pki)
    except OSError as err:
        raise PkiError(f"cannot write {err.filename or root_dir}: {err.strerror or err}") from None
    return pki


def _save(pki: Pki) -> None:
    d = pki.directory
    d.mkdir(parents=True, exist_ok=True)
    pck_ca_stem = _pck_ca_stem(pki.pck_ca_kind)
    for stem, issued in (
        ("root_ca", pki.root),
        (pck_ca_stem, pki.pck_ca),
        ("tcb_signing", pki.tcb_signing),
    ):
        _write(d / f"{stem}.pem", issued.pem)
        _write_key(d / f"{stem}.key", issued.key)
    _write(d / "tcb_signing_chain.pem", pki.tcb_signing_chain_pem.encode())
    _write(d / "root_ca.crl", pki.root_ca_crl)
    _write(d / f"{pck_ca_stem}.crl", pki.pck_crl)
    _write(d / "tcb_info.json", pki.tcb_info.pcs_response("tcbInfo").encode())
    _write(d / "qe_identity.json", pki.qe_identity.pcs_response("enclaveIdentity").encode())
    _write(d / "collateral.json", pki.collateral_json.encode())
    manifest_platforms = []
    for p in pki.platforms:
        pdir = d / "platforms" / str(p.index)
        _write(pdir / "pck.pem", p.certificate.public_bytes(serialization.Encoding.PEM))
        _write_key(pdir / "pck.key", p.key)
        _write(pdir / "pck_chain.pem", p.chain_pem)
        manifest_platforms.append({"index": p.index, "ppid": p.ppid.hex(), "dir": f"platforms/{p.index}"})
    manifest = {
        "format": FORMAT,
        "simulated": "tdxsim simulated Intel PCS - not Intel; trust root_ca.pem only for simulated evidence",
        "now": pki.now,
        "options": pki.options.to_json(),
        "pck_ca": pki.pck_ca_kind,
        "platforms": manifest_platforms,
    }
    # The manifest goes last: its presence marks a complete PKI.
    _write(d / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())


# --- loading ------------------------------------------------------------------------------------------------


def _signed_from_response(text: str, member: str) -> SignedJson:
    """Split a PCS response body written by ``SignedJson.pcs_response`` back into exact text and signature."""
    prefix = f'{{"{member}":'
    marker = ',"signature":"'
    cut = text.rfind(marker)
    if not text.startswith(prefix) or cut < 0 or not text.endswith('"}'):
        raise PkiError(f"malformed {member} response")
    return SignedJson(text[len(prefix) : cut], bytes.fromhex(text[cut + len(marker) : -2]))


def _issued(d: Path, stem: str) -> ca.Issued:
    cert = x509.load_pem_x509_certificate((d / f"{stem}.pem").read_bytes())
    return ca.Issued(cert, load_private_key_pem((d / f"{stem}.key").read_bytes()))


_UNLOADABLE: tuple[type[Exception], ...] = (
    OSError,
    KeyError,
    AttributeError,
    RecursionError,
    *x509_input.MALFORMED,
)
"""What a damaged PKI directory raises while loading: AttributeError for a manifest that is no JSON object,
RecursionError for one nested too deeply, and cryptography's whole family (``UnsupportedAlgorithm`` for a key
of another type included)."""


def load_pki(directory: str | os.PathLike[str]) -> Pki:
    """Load a PKI written by ``init_pki``; every file is read back, nothing is regenerated."""
    d = Path(directory)
    try:
        manifest = json.loads((d / MANIFEST).read_text())
        if manifest.get("format") != FORMAT:
            raise PkiError(f"{d / MANIFEST}: unsupported format {manifest.get('format')!r}")
        pck_ca_stem = _pck_ca_stem(manifest.get("pck_ca", ca.PCK_CA_PLATFORM))
        platforms = []
        for entry in manifest["platforms"]:
            pdir = d / entry["dir"]
            cert = x509.load_pem_x509_certificate((pdir / "pck.pem").read_bytes())
            key = load_private_key_pem((pdir / "pck.key").read_bytes())
            chain = (pdir / "pck_chain.pem").read_bytes()
            platforms.append(PlatformPck(int(entry["index"]), cert, key, chain, bytes.fromhex(entry["ppid"])))
        return Pki(
            directory=d,
            options=PkiOptions.from_json(manifest["options"]),
            now=int(manifest["now"]),
            root=_issued(d, "root_ca"),
            pck_ca=_issued(d, pck_ca_stem),
            tcb_signing=_issued(d, "tcb_signing"),
            tcb_signing_chain_pem=(d / "tcb_signing_chain.pem").read_text(),
            root_ca_crl=(d / "root_ca.crl").read_bytes(),
            pck_crl=(d / f"{pck_ca_stem}.crl").read_bytes(),
            tcb_info=_signed_from_response((d / "tcb_info.json").read_text(), "tcbInfo"),
            qe_identity=_signed_from_response((d / "qe_identity.json").read_text(), "enclaveIdentity"),
            collateral_json=(d / "collateral.json").read_text(),
            platforms=tuple(platforms),
        )
    except _UNLOADABLE as exc:
        raise PkiError(f"cannot load pki from {d}: {exc}") from None


def load_pck(
    directory: str | os.PathLike[str], platform: int = 0
) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """The PCK key and chain PEM of one platform, all a host's quoting enclave needs from the PKI."""
    pck = load_pki(directory).platform(platform)
    return pck.key, pck.chain_pem
