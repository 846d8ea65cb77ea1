"""Generated gRPC/protobuf modules for package tdxsim.v1 (make protos). Do not edit."""
