"""Fixtures shared by every test tier.

The docker and real tiers need a Docker engine. On a laptop without one they
are skipped with the reason; CI sets LLM_DOCKER_REQUIRE_ENGINE=1, which turns
that skip into a failure so a broken engine can never pass as green.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

ENGINE_PROBE_TIMEOUT_S = 20  # `docker version` against a local daemon takes well under 1 s


def skip_or_fail(reason: str) -> None:
    """Skip the test, or fail it when the engine is required (CI)."""
    if os.environ.get("LLM_DOCKER_REQUIRE_ENGINE") == "1":
        pytest.fail(f"{reason} (LLM_DOCKER_REQUIRE_ENGINE=1 forbids skipping)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_env() -> dict[str, str]:
    """Return the environment for engine calls, or skip when no engine responds."""
    if shutil.which("docker") is None:
        skip_or_fail("no docker CLI on PATH: install Docker to run the docker tier")

    env = dict(os.environ)
    try:
        probe = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=ENGINE_PROBE_TIMEOUT_S,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        skip_or_fail(f"the Docker engine did not answer within {ENGINE_PROBE_TIMEOUT_S} s")
    if probe.returncode != 0:
        detail = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        skip_or_fail(f"no Docker engine responds ({detail}); start one or set DOCKER_HOST")
    return env
