"""Per-user quotas with per-group and per-user overrides."""

import pytest
from traitlets import TraitError
from traitlets.config import Config

from services.identity import Requester
from services.quotas import Quotas


def quotas(**cfg):
    c = Config()
    for key, value in cfg.items():
        setattr(c.Quotas, key, value)
    return Quotas(config=c)


CASES = [
    # groups of the user, user name, expected (cpu, memory_gb, gpus)
    ((), "al", (4, 16, 1)),
    (("vision",), "al", (4, 64, 4)),
    (("vision", "nlp"), "al", (8, 64, 4)),   # most generous group per resource
    (("nlp",), "bo", (8, 16, 0)),            # the user entry wins over groups
]


@pytest.mark.parametrize("groups, user, expected", CASES)
def test_limits(groups, user, expected):
    q = quotas(default={"cpu": 4, "memory_gb": 16, "gpus": 1},
               groups={"vision": {"gpus": 4, "memory_gb": 64}, "nlp": {"cpu": 8, "gpus": 2}},
               users={"bo": {"gpus": 0}})
    limits = q.limits_for(Requester(user, frozenset(groups)))
    assert (limits.cpu, limits.memory_gb, limits.gpus) == expected


@pytest.mark.parametrize("cfg, words", [
    ({"default": {"cpus": 4}}, "unknown resource 'cpus'"),
    ({"groups": {"g": {"gpus": -1}}}, "must be a number >= 0"),
    ({"users": {"u": 3}}, "must be a dict"),
])
def test_bad_config_is_refused(cfg, words):
    with pytest.raises(TraitError, match=words):
        quotas(**cfg).limits_for(Requester("x"))
