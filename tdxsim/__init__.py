"""tdxsim: the command line and the generated gRPC stubs (tdxsim.v1).

Kept import-free so that guest and verifier processes can import tdxsim.v1 without
pulling in the host.
"""
