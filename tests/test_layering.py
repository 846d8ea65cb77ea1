"""The import graph follows the processes and the trust boundary (README "The host, in layers").

- ``guest/`` never imports ``host/``: a guest talks to its host only over gRPC;
- ``attest/`` imports neither ``host/`` nor ``guest/``: both sides may use it;
- untrusted host code (``host.kvm``, ``host.vmm``, ``host.rpc``) never imports what holds keys or
  plaintext (the memory controller and its cipher engine); it uses the TDX module's SEAMCALL
  interface and the KeyID-0 host bus;
- the VMM reaches memory only through KVM: it does not import the TDX module or the host bus.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imports_of(package: str) -> list[tuple[str, str, str]]:
    """(file, imported module, imported name or '*') for every import in ``package``."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(str(path.relative_to(ROOT)), alias.name, "*") for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                found += [(str(path.relative_to(ROOT)), node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("guest", ("host",)), ("attest", ("host", "guest"))],
)
def test_process_packages_do_not_import_each_other(package: str, forbidden: tuple[str, ...]) -> None:
    bad = [(f, m) for f, m, _ in imports_of(package) if m.split(".")[0] in forbidden]
    assert bad == []


#: What key/plaintext-holding modules untrusted code may still name: exception types only.
UNTRUSTED_MAY_TAKE = {("host.tdx.memctl", "MachineCheck")}
KEY_HOLDERS = ("host.tdx.memctl", "host.tdx.xts")


@pytest.mark.parametrize("package", ["host/kvm", "host/vmm", "host/rpc"])
def test_untrusted_host_code_never_imports_keys_or_the_memory_controller(package: str) -> None:
    bad = [
        (f, m, n)
        for f, m, n in imports_of(package)
        if m.startswith(KEY_HOLDERS) and (m, n) not in UNTRUSTED_MAY_TAKE
    ]
    assert bad == []


def test_vmm_reaches_memory_only_through_kvm() -> None:
    bad = [(f, m) for f, m, _ in imports_of("host/vmm") if m in ("host.tdx.module", "host.tdx.hostbus")]
    assert bad == []


def test_grpc_layer_gets_the_vmm_not_the_machine() -> None:
    # The servicers translate requests for the VMM; they never hold the platform (and with it the
    # memory controller) nor call the TDX module.
    bad = [
        (f, m)
        for f, m, _ in imports_of("host/rpc")
        if m in ("host.platform", "host.tdx.module", "host.tdx.hostbus", "host.kvm.kvm")
    ]
    assert bad == []
