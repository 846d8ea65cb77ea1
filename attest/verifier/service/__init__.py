"""The remote verifier service (issue 4): core logic, status table, gRPC servicer, server and process."""
