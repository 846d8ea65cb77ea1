"""The host's gRPC layer: servicers that translate messages to VMM calls and errors to
statuses. No simulation logic lives here."""
