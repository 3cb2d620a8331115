"""labdeck: the one configuration file for the hub, the spawner and the platform policies.

Embedded defaults: SQLite files in the data directory ($LABDECK_DATA_DIR, default ./data),
the local Docker engine as the only host of the only region "default", GPUs detected with
nvidia-smi when present. Override anything below, or put site settings in a file named by
$LABDECK_EXTRA_CONFIG (loaded last), e.g.:

    c.Resources.hosts = [
        {"name": "gpu-01", "region": "east", "docker_url": "unix:///var/run/docker.sock",
         "cpus": 32, "memory_gb": 256, "gpus": {"A100": 4}},
    ]
    c.Quotas.default = {"cpu": 8, "memory_gb": 32, "gpus": 1}
    c.Quotas.groups = {"vision-lab": {"gpus": 4}}
    c.PathPolicy.shared_roots = [{"name": "imagenet", "path": "/srv/datasets/imagenet"}]
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    # the packages services/, spawner/, handlers/ live next to this file
    sys.path.insert(0, str(HERE))

from handlers.nav import nav_items  # noqa: E402
from services.db import sqlite_connector  # noqa: E402
from services.docker_pool import bridge_gateway  # noqa: E402

c = get_config()  # noqa: F821 (injected by traitlets)

data_dir = Path(os.environ.get("LABDECK_DATA_DIR") or HERE / "data").resolve()
data_dir.mkdir(parents=True, exist_ok=True)

# ---- platform (shared by hub, spawner, authenticator and service) ----
c.Platform.data_dir = str(data_dir)

# ---- the hub and its proxy ----
c.JupyterHub.bind_url = os.environ.get("LABDECK_URL", "http://127.0.0.1:8000")
# containers call the hub API over the Docker bridge, so the hub listens on the bridge gateway
c.JupyterHub.hub_ip = c.JupyterHub.hub_connect_ip = bridge_gateway()
c.JupyterHub.hub_port = int(os.environ.get("LABDECK_HUB_PORT", "8081"))
c.JupyterHub.db_url = f"sqlite:///{data_dir / 'jupyterhub.sqlite'}"
# a write-ahead log and no fsync per commit, as the platform's own database (services/db.py)
c.JupyterHub.db_kwargs = {"creator": sqlite_connector(str(data_dir / "jupyterhub.sqlite"))}
c.JupyterHub.cookie_secret_file = str(data_dir / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.command = [str(HERE / "node_modules" / ".bin" / "configurable-http-proxy")]
c.ConfigurableHTTPProxy.pid_file = str(data_dir / "jupyterhub-proxy.pid")
c.ConfigurableHTTPProxy.api_url = os.environ.get("LABDECK_PROXY_API_URL", "http://127.0.0.1:8001")
# a hub restart must never stop users' servers
c.JupyterHub.cleanup_servers = False
c.JupyterHub.template_paths = [str(HERE / "handlers" / "templates")]
SERVICE_PREFIX = "/services/labdeck/"
c.JupyterHub.template_vars = {
    "product": "labdeck",
    "labdeck_url": SERVICE_PREFIX,
    "labdeck_nav": nav_items("/hub/", SERVICE_PREFIX),
}
from spawner.notices import banner_vars  # noqa: E402

c.JupyterHub.template_vars["labdeck_banners"] = banner_vars(c)  # maintenance notices on the hub's pages

# ---- the labdeck service: every module beyond "Start my Server" ----
_extra = os.environ.get("LABDECK_EXTRA_CONFIG", "")
c.JupyterHub.services = [
    {
        "name": "labdeck",
        "url": f"http://127.0.0.1:{int(os.environ.get('LABDECK_SERVICE_PORT', '10101'))}",
        "command": [sys.executable, "-m", "services.main"],
        "cwd": str(HERE),
        "oauth_no_confirm": True,  # same login, no consent screen
        "display": False,  # it is in the navigation already
        "environment": {
            "LABDECK_DATA_DIR": str(data_dir),
            "LABDECK_CONFIG_FILE": str(HERE / "jupyterhub_config.py"),
            "LABDECK_EXTRA_CONFIG": _extra,
            "PYTHONPATH": str(HERE),
        },
    },
]
c.Platform.service_prefix = SERVICE_PREFIX
# every signed-in user may use the labdeck service (admins may anyway)
c.JupyterHub.load_roles = [{"name": "user", "scopes": ["self", "access:services!service=labdeck"]}]

# ---- accounts ----
c.JupyterHub.authenticator_class = "spawner.authenticator.LabdeckAuthenticator"
c.Authenticator.admin_users = {"admin"}
c.LabdeckAuthenticator.signup_mode = "open"

# ---- "Start my Server" ----
c.JupyterHub.spawner_class = "spawner.spawner.LabdeckSpawner"
c.Spawner.default_url = "/lab"
# Said explicitly: images built on the debug image (desktop, training, users' snapshots) have no
# start command of their own; given one, their entrypoint runs it as the image's user.
c.Spawner.cmd = ["jupyterhub-singleuser"]
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 60
# Servers started before anyone asks, handed out in a fraction of a cold start (c.WarmPool.size
# per host; needs root and a local engine, else it stays off). See spawner/warm_pool.py.
from spawner.warm_pool import start_with_hub  # noqa: E402

start_with_hub()

# ---- platform images offered in the pickers ----
c.ImageCatalog.platform_images = [
    {
        "name": "labdeck/notebook:latest",
        "title": "JupyterLab",
        "description": "JupyterLab with Python 3.11 and jupyter-server-proxy",
        "kinds": ["notebook", "job"],
    },
    {
        "name": "labdeck/debug:latest",
        "title": "Remote debug (JupyterLab + SSH)",
        "description": "The notebook environment with an SSH server, for remote-debug sessions",
        "kinds": ["debug"],
    },
    {
        "name": "labdeck/desktop:latest",
        "title": "Linux desktop (XFCE)",
        "description": "An XFCE desktop in the browser (noVNC), Mesa OpenGL, gcc/g++ and make, JupyterLab, SSH",
        "kinds": ["notebook", "debug", "job"],
    },
    {
        "name": "labdeck/training:latest",
        "title": "Training (PyTorch CPU)",
        "description": "PyTorch (CPU build), NumPy, pandas, scikit-learn, JupyterLab, SSH",
        "kinds": ["notebook", "debug", "job"],
    },
]

# ---- site settings last ----
if _extra:
    load_subconfig(_extra)  # noqa: F821 (injected by traitlets)

# ---- CPU weight, with the site's settings: the hub (with its proxy and service) and the servers
# people wait for get the CPU before the engine's long operations (services/cpu_groups.py) ----
from spawner.cpu_weight import weigh_the_hub  # noqa: E402

weigh_the_hub(c)
