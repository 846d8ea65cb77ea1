"""The host's gRPC layer: servicers that translate messages to VMM calls and errors to
statuses (docs/grpc.md, docs/conventions.md §7). No simulation logic lives here."""
