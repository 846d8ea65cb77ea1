"""TD guest side: the library a TD's code uses to talk to the platform (TDCALLs, TDVMCALLs)
over gRPC (docs/memory-model.md §5, docs/architecture.md "Import stack of the folders"). It never imports
``host``."""
