"""A Platform on a temporary SQLite file with a declared inventory: no Docker needed."""

from traitlets.config import Config

from services.platform import Platform

HOSTS = [
    {"name": "a1", "region": "default", "cpus": 8, "memory_gb": 16, "gpus": {"A100": 2}},
    {"name": "a2", "region": "default", "cpus": 4, "memory_gb": 8, "gpus": {"A100": 1, "T4": 1}},
    {"name": "e1", "region": "east", "cpus": 2, "memory_gb": 4, "gpus": {}},
]


def make_platform(tmp_path, **overrides) -> Platform:
    c = Config()
    c.Platform.data_dir = str(tmp_path / "data")
    c.Resources.hosts = overrides.pop("hosts", HOSTS)
    c.ImageCatalog.platform_images = overrides.pop("images", [
        {"name": "labdeck/notebook:latest", "title": "JupyterLab"},
        {"name": "lab/vision:1", "title": "Vision", "groups": ["vision"], "kinds": ["notebook", "job"]},
        {"name": "lab/batch:1", "title": "Batch", "kinds": ["job"]},
    ])
    c.Quotas.default = overrides.pop("quota", {"cpu": 8, "memory_gb": 16, "gpus": 2})
    for key, value in overrides.items():
        section, name = key.split("__")
        setattr(getattr(c, section), name, value)
    return Platform(config=c)
