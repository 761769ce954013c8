import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fixture_cache(tmp_path_factory):
    """One folder for the trained security fixtures (each trains once per session, then loads as an artifact);
    ``$ACTLAB_TEST_FIXTURE_CACHE`` reuses a folder across sessions (mutation runs)."""
    env = os.environ.get("ACTLAB_TEST_FIXTURE_CACHE")
    if env:
        Path(env).mkdir(parents=True, exist_ok=True)
        return Path(env)
    return tmp_path_factory.mktemp("security_fixtures")


@pytest.fixture(scope="session")
def digits_bd(fixture_cache):
    from actlab.security import BackdoorConfig, digits_backdoor

    return digits_backdoor(BackdoorConfig(), cache=fixture_cache)


@pytest.fixture(scope="session")
def dualkey_bd(fixture_cache):
    from actlab.security import DualKeyConfig, dualkey_fixture

    return dualkey_fixture(DualKeyConfig(), cache=fixture_cache)


@pytest.fixture(scope="session")
def dualkey_clean(fixture_cache):
    from actlab.security import DualKeyConfig, dualkey_fixture

    return dualkey_fixture(DualKeyConfig(poison_fraction=0.0), cache=fixture_cache)


@pytest.fixture(scope="session")
def clip_bd(fixture_cache):
    from actlab.security import ClipConfig, clip_backdoor

    return clip_backdoor(ClipConfig(), cache=fixture_cache)


@pytest.fixture(scope="session")
def clip_clean(fixture_cache, clip_bd):
    from actlab.security import ClipConfig, clip_backdoor

    return clip_backdoor(ClipConfig(poison_fraction=0.0), cache=fixture_cache)
