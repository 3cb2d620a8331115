"""Which process reads jupyterhub_config.py: the hub, or another reader of the same file (the
labdeck service, a test building a Platform from it)."""

import sys


def running_hub():
    """The JupyterHub application when this process is the hub, else None. Not imported
    here: only the hub has jupyterhub.app loaded."""
    hub_app = sys.modules.get("jupyterhub.app")
    if hub_app is None or not hub_app.JupyterHub.initialized():
        return None
    return hub_app.JupyterHub.instance()
