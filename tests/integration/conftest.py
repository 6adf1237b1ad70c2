"""The broker fixture: ``STREAM_AE_TEST_BOOTSTRAP`` when set, else an embedded Tansu broker."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
from store_helpers import S3_ENV, moto_server_exe, run_moto_server

from stream_ae.apps.broker import EmbeddedBroker, create_topics
from stream_ae.testing import external_bootstrap, unique_name


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = pathlib.Path(__file__).parent
    for item in items:
        if pathlib.Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = external_bootstrap()
    if external:
        yield external
        return
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as broker:
        yield broker.bootstrap


@pytest.fixture
def tag() -> str:
    """A unique suffix for this test's topics, group and transactional id."""
    return unique_name("t")


@pytest.fixture
def topics(bootstrap: str, tag: str) -> dict[str, str]:
    """Create this test's input (2 partitions) and output topics."""
    names = {"in": f"in-{tag}", "alerts": f"alerts-{tag}", "dlq": f"dlq-{tag}",
             "events": f"events-{tag}", "decisions": f"decisions-{tag}"}
    create_topics(bootstrap, {names["in"]: 2, **dict.fromkeys(list(names.values())[1:], 1)})
    return names


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local S3 API server (``moto_server``) for the s3 checkpoint store; its credentials
    (``S3_ENV``) are in the environment while it runs."""
    if moto_server_exe() is None:
        pytest.skip("needs moto[server]")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in S3_ENV.items():
            mp.setenv(k, v)
        yield from run_moto_server(tmp_path_factory.mktemp("moto") / "moto.log")
