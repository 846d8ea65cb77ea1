"""The remote verifier service: core logic, status table, gRPC servicer, server and process."""
