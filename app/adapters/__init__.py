"""The protocol adapters: each reads its wire format into the core's types and renders the
core's answers in its own shape. HTTP's are wired onto Flask in `routes`; gRPC's need no web
framework.
"""
