"""Triton's published `inference` protos and their grpcio-tools stubs (scripts/gen_grpc_stubs.py).

Generated code: not edited by hand, not linted. tests/test_grpc.py regenerates and compares.
"""
