"""The remote verifier service: core logic, status table, gRPC servicer, server and process (docs/grpc.md
"VerifierService", docs/conventions.md §7)."""
