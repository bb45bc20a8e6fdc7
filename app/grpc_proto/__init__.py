"""Triton's published `inference` protos and their grpcio-tools stubs (benchkit/grpc_stubs.py).

Generated code: not edited by hand, not linted. tests/test_grpc.py regenerates and compares.
"""
