"""The request core every protocol shares, with no web framework: the verbs (`verbs`), the
types adapters build from their wire and render (`types`), who may call (`access`) and when a
worker or a model serves (`ready`). Adapters sit above it; the engine and batcher below.
"""
