"""The tdxsim host process: the hypervisor side of a TDX machine (docs/architecture.md "Layers and the trust
boundary").

Layers, from trusted to untrusted (each imports only the one below it):

- ``host.tdx``  — trusted: the TDX module and the memory controller (keys, ciphertext, Secure-EPT);
- ``host.kvm``  — untrusted kernel: guest_memfd, memslots, memory attributes, the fault path;
  reaches the TDX module only through its SEAMCALL entry points (``host.tdx.seamcall``);
- ``host.vmm``  — untrusted host userspace (QEMU's role): reaches memory only through KVM;
- ``host.rpc``  — gRPC servicers that translate messages and errors and hold no logic.
"""
