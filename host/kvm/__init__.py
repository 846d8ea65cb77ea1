"""Untrusted layer: the host kernel's KVM (docs/memory-model.md §1, §2, §6).

guest_memfd files, memslots, memory attributes, the TDX fault and zap paths and KVM_RUN.
Reaches the TDX module only through its SEAMCALL leaves (``TdxModule.tdh_*``,
``TdxModule.vp_enter``) and physical memory only through the KeyID-0 host bus; it never holds
a TD key or TD plaintext. Errors are :class:`~host.kvm.errors.KvmError` with the real errno.
"""
