"""End to end: a host with a simulated PCS quotes a TD's TDREPORT, and independent verifiers accept it."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from pathlib import Path

import dcap_qvl
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attest.verifier import offline
from attest.verifier.dcap.roots import INTEL_SGX_ROOT_CA_PEM
from guest.connection import td_channel
from tests.conftest import HostProcess, make_pki
from wire.v1 import guest_pb2, guest_pb2_grpc, host_pb2, host_pb2_grpc

PAGE = 4096
MIB = 1 << 20


def quote_from_td(host: HostProcess, report_data: bytes) -> bytes:
    admin = host_pb2_grpc.HostServiceStub(host.admin_channel)
    image = host_pb2.TdImage(
        memory_bytes=16 * MIB, payload=[host_pb2.Payload(gpa=0, data=b"kernel", measure=True)]
    )
    td = admin.LaunchTd(host_pb2.LaunchTdRequest(image=image, name="quoted"), timeout=10)
    guest = guest_pb2_grpc.TdGuestServiceStub(td_channel(host.channel, td.credential))
    buf = td.shared_bit | 8 * MIB
    header = struct.pack("<QQII", 1, 0xFFFF_FFFF_FFFF_FFFF, 1024, 0)
    ins = guest_pb2.Instruction
    run = [
        ins(accept=guest_pb2.AcceptRange(gpa=MIB, length=2 * PAGE)),
        ins(write=guest_pb2.GpaData(gpa=MIB + PAGE, data=report_data)),
        ins(report=guest_pb2.Report(report_gpa=MIB, reportdata_gpa=MIB + PAGE)),
        ins(read=guest_pb2.GpaRange(gpa=MIB, length=1024)),
        ins(map_gpa=guest_pb2.GpaRange(gpa=buf, length=4 * PAGE)),
    ]
    results = guest.Run(guest_pb2.RunRequest(td_id=td.td_id, instructions=run), timeout=20).results
    report = results[3].data
    run = [
        ins(write=guest_pb2.GpaData(gpa=buf, data=header + report)),
        ins(get_quote=guest_pb2.GpaRange(gpa=buf, length=4 * PAGE)),
        ins(read=guest_pb2.GpaRange(gpa=buf, length=4 * PAGE)),
    ]
    results = guest.Run(guest_pb2.RunRequest(td_id=td.td_id, instructions=run), timeout=20).results
    _, status, _, out_len = struct.unpack("<QQII", results[2].data[:24])
    assert status == 0, hex(status)
    return results[2].data[24 : 24 + out_len]


def test_host_quote_verifies_with_dcap_qvl_and_tdxsim_against_the_simulated_root(
    host_factory: Callable[..., HostProcess], tmp_path: Path
) -> None:
    make_pki(tmp_path / "pki")
    host = host_factory("--pki", str(tmp_path / "pki"))
    report_data = bytes(range(64))
    quote = quote_from_td(host, report_data)
    collateral = (tmp_path / "pki" / "collateral.json").read_text()
    root_pem = (tmp_path / "pki" / "root_ca.pem").read_bytes()
    root_der = x509.load_pem_x509_certificate(root_pem).public_bytes(serialization.Encoding.DER)
    now = int(time.time())

    theirs = dcap_qvl.verify_with_root_ca(
        quote, dcap_qvl.QuoteCollateralV3.from_json(collateral), root_der, now
    )
    assert theirs.status == "UpToDate"

    ours = offline.verify(quote, collateral, now, [root_der])
    assert (ours["verdict"], ours["tcb_status"]) == ("accepted", "UpToDate")
    assert ours["report"]["report_data"] == report_data.hex()

    intel = offline.verify(quote, collateral, now, [INTEL_SGX_ROOT_CA_PEM])
    assert intel["verdict"] == "rejected", "simulated evidence must never chain to Intel's root"
