"""Trusted layer: the TDX module and the memory controller (docs/memory-model.md §4, §7, §8).

Everything that holds TD keys, TD plaintext or Secure-EPT state lives here. Untrusted code
(``host.kvm``) calls the module only through :mod:`host.tdx.seamcall` — the SEAMCALL leaves
of the host-side ABI — and the CPU's TD-execution path (:meth:`TdxModule.vp_enter`). Nothing
here imports KVM, the VMM or gRPC.
"""
