"""The `ray up` cluster files in examples/cluster/ pass Ray's own checks, offline.

`ray up` first runs ``prepare_config`` (merge with the provider's defaults.yaml, setup commands, per-node
min/max workers; for the local provider, the node list) and then ``validate_config`` (Ray's JSON schema
plus cross-field rules). Both work without cloud credentials or network, so they run here. What `ray up`
does after them -- asking AWS/GCP for instance details, creating keys, roles and firewall rules -- needs an
account and is not checked.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from click import ClickException
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_DIR = Path(__file__).resolve().parents[1] / "examples" / "cluster"
CLOUD_FILES = ["aws.yaml", "gcp.yaml"]
ALL_FILES = CLOUD_FILES + ["onprem.yaml"]


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER_DIR / name).read_text())


def ray_up_checks(config: dict) -> dict:
    """The offline part of `ray up`: Ray's preparation, then its validation. Returns the prepared config."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.mark.parametrize("name", ALL_FILES)
def test_cluster_file_passes_ray_up_validation(name):
    prepared = ray_up_checks(load(name))
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("name", ALL_FILES)
def test_every_node_installs_tunekit_with_the_tested_ray(name):
    """Nodes must run the Ray version the laptop runs; pinning this suite's version keeps the files current."""
    prepared = ray_up_checks(load(name))
    for commands in (prepared["head_setup_commands"], prepared["worker_setup_commands"]):
        installs = " ".join(commands)
        assert re.search(r"pip install .*tunekit", installs)
        assert f'"ray[default,tune]=={ray.__version__}"' in installs


@pytest.mark.parametrize("name", CLOUD_FILES)
def test_cloud_cluster_has_multi_gpu_workers_and_a_trial_free_head(name):
    prepared = ray_up_checks(load(name))
    node_types = prepared["available_node_types"]
    head = prepared["head_node_type"]
    assert node_types[head]["resources"].get("CPU") == 0
    assert node_types[head]["resources"].get("GPU", 0) == 0
    workers = [t for name_, t in node_types.items() if name_ != head]
    assert workers and all(t["resources"]["GPU"] >= 2 for t in workers)
    assert sum(t["max_workers"] for t in workers) <= prepared["max_workers"]


@pytest.mark.parametrize("name, break_it", [
    ("aws.yaml", lambda c: c.update(max_worker=c.pop("max_workers"))),
    ("gcp.yaml", lambda c: c["available_node_types"]["gpu_worker"].update(
        resource=c["available_node_types"]["gpu_worker"].pop("resources"))),
    ("aws.yaml", lambda c: c["available_node_types"]["gpu_worker"].update(resources={"GPU": 0.5})),
    ("gcp.yaml", lambda c: c["auth"].update(ssh_key="~/.ssh/id_rsa")),
])
def test_a_broken_key_fails_the_schema(name, break_it):
    config = load(name)
    break_it(config)
    with pytest.raises(jsonschema.ValidationError):
        ray_up_checks(config)


def test_head_node_type_must_name_a_node_type():
    config = load("aws.yaml")
    config["head_node_type"] = "ray.head.default"
    with pytest.raises(ValueError, match="head_node_type"):
        ray_up_checks(config)


def test_min_workers_beyond_max_workers_fail():
    config = load("gcp.yaml")
    config["available_node_types"]["gpu_worker"]["min_workers"] = config["max_workers"] + 1
    with pytest.raises(ValueError, match="max_workers"):
        ray_up_checks(config)


def test_local_provider_refuses_node_types_and_needs_the_host_list():
    with_types = load("onprem.yaml")
    with_types["available_node_types"] = load("aws.yaml")["available_node_types"]
    with pytest.raises(ClickException):
        ray_up_checks(with_types)
    without_head = load("onprem.yaml")
    del without_head["provider"]["head_ip"]
    with pytest.raises(ClickException):
        ray_up_checks(without_head)
