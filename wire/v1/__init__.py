"""Generated gRPC/protobuf modules of proto package tdxsim.v1 (make protos). Do not edit."""
