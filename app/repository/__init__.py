"""The model repository: what serves, and how it changes without downtime.

Each module one step, the lower ones first: `triton` (a Triton model folder's config.pbtxt ->
its spec), `scan` (folders -> versions and artifacts), `plans` (what each model serves),
`snapshot` (the plans kept across restarts), `loading` (the plans a start serves; a version ->
an engine), `registry` (routing by model and version, leases, gray-release shares), `folder`
(the files the workers share), `control` (a change staged and switched on every worker),
`operations` (the management calls). Nothing is imported here: each caller names the module
it needs.
"""
