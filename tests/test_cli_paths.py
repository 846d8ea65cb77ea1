"""Every ``tdxsim`` subcommand that takes a path: an unusable one is one line on stderr naming it, exit 2,
never a traceback (docs/cli.md, "Exit statuses common to all commands").

Unusable means missing, a directory where a file is wanted (or a file where a directory is), a path under a
file, bytes that are not UTF-8 text, or content that is not what the option holds, down to a TLS certificate
or key on a curve cryptography does not support (it says so with UnsupportedAlgorithm). The whole table runs
in this process through ``tdxsim.cli.main`` (seconds, and an escape fails with its traceback); a few cases run
as a user runs them, ``python -m tdxsim.cli``, to check the exact line.
"""

from __future__ import annotations

import base64
import datetime
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from attest.verifier.dcap.roots import INTEL_SGX_ROOT_CA_PEM
from tdxsim.cli import main
from tests.conftest import ADMIN_FILE

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "examples" / "image.json"
LISTEN = ("--listen", "127.0.0.1:0", "--admin-credential-file", str(ADMIN_FILE))


P256 = bytes.fromhex("06082a8648ce3d030107")  # the named curve's OID, DER
PRIME192V2 = bytes.fromhex("06082a8648ce3d030102")  # a curve cryptography refuses with UnsupportedAlgorithm


def _unsupported_curve_pair(tmp: Path) -> tuple[Path, Path, Path]:
    """(a certificate whose key is on an unsupported curve, its P-256 key, a key file on that curve)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unsupported curve")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER).replace(P256, PRIME192V2)
    pkcs8 = serialization.PrivateFormat.PKCS8
    key_der = key.private_bytes(serialization.Encoding.DER, pkcs8, serialization.NoEncryption())
    paths = tmp / "curve.pem", tmp / "p256.key", tmp / "curve.key"
    paths[0].write_text(
        f"-----BEGIN CERTIFICATE-----\n{base64.encodebytes(der).decode()}-----END CERTIFICATE-----\n"
    )
    paths[1].write_bytes(key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption()))
    key_b64 = base64.encodebytes(key_der.replace(P256, PRIME192V2)).decode()
    paths[2].write_text(f"-----BEGIN PRIVATE KEY-----\n{key_b64}-----END PRIVATE KEY-----\n")
    return paths


def _cases(tmp: Path) -> dict[str, list[str]]:
    file, folder, binary, root = tmp / "file", tmp / "dir", tmp / "binary", tmp / "root.pem"
    file.write_text("")
    folder.mkdir()
    binary.write_bytes(b"\xff\xfe\x00")
    root.write_bytes(INTEL_SGX_ROOT_CA_PEM)
    nul_image = tmp / "nul_image.json"
    nul_image.write_text(json.dumps({"memory": "64M", "payload": [{"gpa": 0, "file": "a\u0000b"}]}))
    nul_workload = tmp / "nul.tdx"
    nul_workload.write_text("write 0x1000 file:a\u0000b\n")
    pki_list, pki_deep = tmp / "pki_list", tmp / "pki_deep"
    for pki, manifest in ((pki_list, "[1]"), (pki_deep, "[" * 5000)):
        pki.mkdir()
        (pki / "pki.json").write_text(manifest)
    curve_cert, p256_key, curve_key = _unsupported_curve_pair(tmp)
    under = str(file / "sub")
    guest = ["guest", "--host", "127.0.0.1:1", "--image", str(IMAGE)]
    verifier = ["verifier", *LISTEN]
    return {
        "pki init FILE": ["pki", "init", str(file)],
        "pki init FILE/sub": ["pki", "init", under],
        "quote inspect DIR": ["quote", "inspect", str(folder)],
        "quote inspect FILE/sub": ["quote", "inspect", under],
        "quote inspect MISSING": ["quote", "inspect", str(tmp / "missing")],
        "quote verify --collateral DIR": ["quote", "verify", str(file), "--collateral", str(folder)],
        "quote verify --collateral BINARY": ["quote", "verify", str(file), "--collateral", str(binary)],
        "quote verify --root DIR": ["quote", "verify", str(file), "--collateral", str(file),
                                    "--root", str(folder)],
        "guest --image DIR": ["guest", "--image", str(folder), "mrtd"],
        "guest --image FILE/sub": ["guest", "--image", under, "mrtd"],
        "guest --image BINARY": ["guest", "--image", str(binary), "mrtd"],
        "guest --image NUL file name": ["guest", "--image", str(nul_image), "mrtd"],
        "guest run DIR": [*guest, "run", str(folder)],
        "guest run FILE/sub": [*guest, "run", under],
        "guest run BINARY": [*guest, "run", str(binary)],
        "guest run NUL file name": [*guest, "run", str(nul_workload)],
        "guest --tls-ca DIR": [*guest, "--tls-ca", str(folder)],
        "guest --admin-credential DIR": [*guest, "--admin-credential", str(folder)],
        "tls init FILE": ["tls", "init", str(file)],
        "tls init FILE/sub": ["tls", "init", under],
        "verifier --db DIR": [*verifier, "--db", str(folder), "--root", str(root)],
        "verifier --db FILE/sub": [*verifier, "--db", under, "--root", str(root)],
        "verifier --root DIR": [*verifier, "--db", str(tmp / "v1.db"), "--root", str(folder)],
        "verifier --root BINARY": [*verifier, "--db", str(tmp / "v2.db"), "--root", str(binary)],
        "verifier --collateral DIR": [*verifier, "--db", str(tmp / "v3.db"), "--root", str(root),
                                      "--collateral", str(folder)],
        "verifier --collateral BINARY": [*verifier, "--db", str(tmp / "v4.db"), "--root", str(root),
                                         "--collateral", str(binary)],
        "host --pki FILE": ["host", *LISTEN, "--pki", str(file)],
        "host --pki DIR without a PKI": ["host", *LISTEN, "--pki", str(folder)],
        "host --pki manifest not an object": ["host", *LISTEN, "--pki", str(pki_list)],
        "host --pki manifest nested too deeply": ["host", *LISTEN, "--pki", str(pki_deep)],
        "host --tls-cert on an unsupported curve": ["host", *LISTEN, "--tls-cert", str(curve_cert),
                                                    "--tls-key", str(p256_key)],
        "verifier --tls-key on an unsupported curve": [*verifier, "--db", str(tmp / "v5.db"),
                                                       "--root", str(root), "--tls-cert", str(curve_cert),
                                                       "--tls-key", str(curve_key)],
        "pcs serve --pki FILE": ["pcs", "serve", "--listen", "127.0.0.1:0", "--pki", str(file)],
        "pcs serve --pki DIR without a PKI": ["pcs", "serve", "--listen", "127.0.0.1:0",
                                              "--pki", str(folder)],
        "pcs serve --pki manifest nested too deeply": ["pcs", "serve", "--listen", "127.0.0.1:0",
                                                       "--pki", str(pki_deep)],
        "verifier --pccs-ca DIR": [*verifier, "--db", str(tmp / "v6.db"), "--root", str(root),
                                   "--pccs", "http://127.0.0.1:1", "--pccs-ca", str(folder)],
        "verifier --pccs-ca BINARY": [*verifier, "--db", str(tmp / "v7.db"), "--root", str(root),
                                      "--pccs", "https://127.0.0.1:1", "--pccs-ca", str(binary)],
        "bench --json DIR": ["bench", "memory", "--json", str(folder)],
        "bench --json FILE/sub": ["bench", "memory", "--json", under],
    }  # fmt: skip


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tdxsim.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def _run_here(args: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``tdxsim ARGS`` in this process (exit status, stderr): an escape fails the test with its traceback.
    Signal handlers a command installs (``tdxsim guest`` makes SIGTERM a KeyboardInterrupt) are put back."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = main(args)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return status, capfd.readouterr().err


def test_every_unusable_path_is_one_stderr_line_and_exit_2(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    wrong = {}
    for name, args in _cases(tmp_path).items():
        status, err = _run_here(args, capfd)
        if status != 2 or len(err.splitlines()) != 1 or not err.startswith("tdxsim "):
            wrong[name] = (status, err)
    assert not wrong, json.dumps(wrong, indent=2)
    assert not (tmp_path / "file" / "sub").exists() and (tmp_path / "file").read_text() == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pki", "init", "{file}"], "tdxsim pki init: cannot create {file}: File exists"),
        (["pki", "init", "{file}/sub"], "tdxsim pki init: cannot create {file}/sub: Not a directory"),
        (["bench", "memory", "--json", "{dir}"], "tdxsim bench: --json {dir}: is a directory"),
        (["quote", "inspect", "{dir}"], "tdxsim quote: cannot read {dir}: Is a directory"),
        (
            ["host", *LISTEN, "--pki", "{file}"],
            "tdxsim host: cannot load pki from {file}: [Errno 20] Not a directory: '{file}/pki.json'",
        ),
    ],
)
def test_the_line_names_the_path(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "dir").mkdir()
    paths = {"file": str(tmp_path / "file"), "dir": str(tmp_path / "dir")}
    result = _run([a.format(**paths) for a in args])
    assert (result.returncode, result.stderr.splitlines()) == (2, [message.format(**paths)])
