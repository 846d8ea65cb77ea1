"""The wire every tdxsim process shares, at the bottom of the stack: the generated gRPC stubs of proto package
``tdxsim.v1`` (``wire.v1``), channel and TLS set-up (``wire.tls``), rich error statuses (``wire.rpc_status``),
the gRPC server every server process runs, with its limits and request decoding (``wire.rpc_server``), server
process plumbing (``wire.serving``) and the guest↔host TDX ABI (``wire.tdx_abi``).

It imports nothing of ``host``, ``guest``, ``attest`` or the ``tdxsim`` shell (docs/architecture.md).
"""
