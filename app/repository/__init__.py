"""The model repository: what serves, and how it changes without downtime.

`registry` (folders -> versions and artifacts; routing by model and version), `triton` (a Triton
model folder's config.pbtxt -> its spec), `snapshot` (the plans kept across restarts),
`control` (a change staged and switched on every worker), `operations` (the management calls).
Nothing is imported here: each caller names the module it needs.
"""
