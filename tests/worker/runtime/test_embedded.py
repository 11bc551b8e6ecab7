"""The message of every command that needs Redis when REDIS_URL is unset: where it looked
for a running `optout up`, what it found there, and how to point it at a deployment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from config import ConfigError, load_settings
from tests.real_redis import RealRedis
from worker.runtime.embedded import free_port, redis_url_missing, url_file


@pytest.fixture(scope="module")
def answering_url() -> Iterator[str]:
    yield RealRedis.url()
    RealRedis.stop()


def test_with_no_optout_up_here_it_names_the_file_it_looked_for_and_the_ways_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    message = redis_url_missing(load_settings({}))

    assert message.startswith("REDIS_URL is not set, and no running `optout up` answered")
    assert f"looked for {tmp_path / 'var' / 'redis' / 'redis.url'}" in message
    assert f"./var in {tmp_path}, as OPTOUT_DATA_DIR is unset" in message
    assert "there is no such file" in message
    assert "REDIS_URL=redis://HOST:6379/0" in message
    assert "run the command in the folder where `optout up` runs" in message
    assert "set OPTOUT_DATA_DIR" in message


def test_a_stopped_optout_up_is_named_with_the_url_that_did_not_answer(tmp_path: Path) -> None:
    settings = load_settings({"OPTOUT_DATA_DIR": str(tmp_path)})
    stale = f"redis://127.0.0.1:{free_port()}/0"
    url_file(tmp_path).parent.mkdir()
    url_file(tmp_path).write_text(stale + "\n")

    message = redis_url_missing(settings)

    assert f"(the data dir: OPTOUT_DATA_DIR={tmp_path})" in message
    assert f"it names {stale}, which does not answer" in message


def test_a_running_optout_up_is_named_with_the_url_to_join_it(
    tmp_path: Path, answering_url: str
) -> None:
    settings = load_settings({"OPTOUT_DATA_DIR": str(tmp_path)})
    url_file(tmp_path).parent.mkdir()
    url_file(tmp_path).write_text(answering_url + "\n")

    message = redis_url_missing(settings)

    assert message.startswith("REDIS_URL is not set. An `optout up` runs with this data dir")
    assert message.endswith(f"REDIS_URL={answering_url}")


def test_the_settings_refuse_a_missing_url_with_the_same_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings({})

    with pytest.raises(ConfigError) as refused:
        _ = settings.state_redis_url

    assert str(refused.value) == redis_url_missing(settings)
