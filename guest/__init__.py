"""TD guest side: the library a TD's code uses to talk to the platform (TDCALLs, TDVMCALLs)
over gRPC. It never imports ``host``."""
