"""Untrusted layer: the VMM, host userspace (QEMU's role).

Creates TDs, guest_memfds and memslots through KVM ioctls, runs vCPUs and handles their exits
(memory faults, MapGPA hypercalls), converts memory as QEMU's ``kvm_convert_memory()`` does and
can *try* to touch guest memory. Reaches memory only through KVM and its own address space
(docs/architecture.md "Layers and the trust boundary", docs/memory-model.md §2).
"""
