"""labdeck's domain logic: no HTTP, no JupyterHub handlers.

Everything here is shared by the hub (spawner, authenticator) and the labdeck
service: one resource ledger, one path policy, one container recipe, one
validation of options.
"""
