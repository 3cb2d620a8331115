"""Stock JupyterHub + DockerSpawner, set up like labdeck's hub for a fair comparison:
same image, same proxy, same hub settings; only the spawner differs."""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from services.docker_pool import bridge_gateway  # noqa: E402

c = get_config()  # noqa: F821
data_dir = Path(os.environ["LABDECK_DATA_DIR"])
data_dir.mkdir(parents=True, exist_ok=True)
c.JupyterHub.bind_url = os.environ["LABDECK_URL"]
c.JupyterHub.hub_ip = c.JupyterHub.hub_connect_ip = bridge_gateway()
c.JupyterHub.hub_port = int(os.environ["LABDECK_HUB_PORT"])
c.JupyterHub.db_url = f"sqlite:///{data_dir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(data_dir / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.command = [str(REPO / "node_modules" / ".bin" / "configurable-http-proxy")]
c.ConfigurableHTTPProxy.pid_file = str(data_dir / "jupyterhub-proxy.pid")
c.ConfigurableHTTPProxy.api_url = os.environ["LABDECK_PROXY_API_URL"]
c.JupyterHub.cleanup_servers = True
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.image = "labdeck/notebook:latest"
c.DockerSpawner.remove = True
c.DockerSpawner.name_template = "labdeckbench-stock-{username}"
c.DockerSpawner.extra_create_kwargs = {"labels": {"labdeck.instance": "labdeckbench"}}
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 60
load_subconfig(os.environ["LABDECK_EXTRA_CONFIG"])  # noqa: F821
