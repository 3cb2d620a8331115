"""The README's configuration example is real configuration."""

import re

from traitlets.config import Config

from services.identity import Requester
from services.platform import Platform
from tests.hubtools import REPO


def readme_config() -> Config:
    text = (REPO / "README.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", text, re.S)
    config = Config()
    exec(compile(block, "README.md", "exec"), {"get_config": lambda: config})
    return config


def test_readme_example_configures_regions_quotas_and_roots(tmp_path):
    config = readme_config()
    config.Platform.data_dir = str(tmp_path)
    platform = Platform(config=config)
    assert platform.resources.regions() == ["east", "west"]
    west = platform.resources.host("gpu-02")
    assert west.gpu_models == ["A100", "T4"] and len(west.gpus) == 6 and west.address == "10.0.0.12"
    assert platform.resources.host("gpu-01").gpu_source == "detected"
    limits = platform.quotas.limits_for(Requester("bob", frozenset({"vision-lab"})))
    assert (limits.cpu, limits.memory_gb, limits.gpus) == (8, 128, 4)
    assert platform.quotas.limits_for(Requester("alice")).cpu == 32
    names = [r.name for r in platform.paths.roots_for(Requester("carol"))]
    assert names[1:] == ["imagenet"]  # "medical" is for med-lab members only
    assert config.LabdeckAuthenticator.signup_mode == "approval"
