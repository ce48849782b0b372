"""Settings: PROCESSOR_* environment variables, an optional JSON file, and clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pydantic
import pytest

from processor.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PROCESSOR_* variable of the machine running the tests leaks into them."""
    for name in list(os.environ):
        if name.upper().startswith("PROCESSOR_"):
            monkeypatch.delenv(name)


def _write(path: Path, values: dict[str, object]) -> Path:
    path.write_text(json.dumps(values))
    return path


def test_defaults_without_environment() -> None:
    settings = load_settings()

    assert settings.batch_size == 256
    assert settings.group_id == "finstream-processor"
    assert settings.topics.transactions == "transactions.raw"
    assert settings.topics.dead_letters == "events.dlq"
    assert settings.kafka == {}


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSOR_BATCH_SIZE", "32")
    monkeypatch.setenv("PROCESSOR_GROUP_ID", "risk-team")
    monkeypatch.setenv("PROCESSOR_EMBEDDING_ENCODING", "base64_f16")
    monkeypatch.setenv("PROCESSOR_STOP_WHEN_DRAINED", "true")

    settings = load_settings()

    assert settings.batch_size == 32
    assert settings.group_id == "risk-team"
    assert settings.embedding_encoding == "base64_f16"
    assert settings.stop_when_drained is True


def test_kafka_settings_are_a_json_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PROCESSOR_KAFKA", '{"fetch.max.bytes": 1048576, "security.protocol": "SASL_SSL"}'
    )

    settings = load_settings()

    assert settings.kafka == {"fetch.max.bytes": 1048576, "security.protocol": "SASL_SSL"}


def test_nested_topic_is_set_by_double_underscore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSOR_TOPICS__ALERTS", "x")

    settings = load_settings()

    assert settings.topics.alerts == "x"
    assert settings.topics.transactions == "transactions.raw"
    assert "x" in settings.topics.all()


def test_unprefixed_variables_do_not_change_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERTS", "someone-elses-variable")
    monkeypatch.setenv("TRANSACTIONS", "also-not-ours")

    settings = load_settings()

    assert settings.topics.alerts == "alerts"
    assert settings.topics.transactions == "transactions.raw"


@pytest.mark.parametrize("value", ["0", "abc", "70000"])
def test_invalid_value_raises_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("PROCESSOR_BATCH_SIZE", value)

    with pytest.raises(ConfigError, match="PROCESSOR_BATCH_SIZE"):
        load_settings()


def test_unknown_topic_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSOR_TOPICS__ALERTZ", "x")

    with pytest.raises(ConfigError, match="ALERTZ"):
        load_settings()


@pytest.mark.parametrize("value", ["not json", "{'fetch.max.bytes': 1}"])
def test_kafka_settings_that_are_not_json_raise_config_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("PROCESSOR_KAFKA", value)

    with pytest.raises(ConfigError, match="PROCESSOR_KAFKA"):
        load_settings()


def test_kafka_settings_that_are_not_an_object_raise_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROCESSOR_KAFKA", "[1, 2]")

    with pytest.raises(ConfigError, match="PROCESSOR_KAFKA"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "key"),
    [
        ("PROCESSOR_KAFKA", "group.id"),
        ("PROCESSOR_CONSUMER_KAFKA", "group.id"),
        ("PROCESSOR_KAFKA", "bootstrap.servers"),
        ("PROCESSOR_PRODUCER_KAFKA", "enable.auto.commit"),
    ],
)
def test_reserved_kafka_keys_are_refused_naming_the_right_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, key: str
) -> None:
    monkeypatch.setenv(variable, json.dumps({key: "x"}))

    with pytest.raises(ConfigError) as caught:
        load_settings()

    message = str(caught.value)
    assert key in message
    assert "PROCESSOR_GROUP_ID" in message
    assert "PROCESSOR_BOOTSTRAP_SERVERS" in message


def test_max_message_bytes_above_fetch_max_bytes_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROCESSOR_KAFKA", '{"fetch.max.bytes": 1048576}')
    monkeypatch.setenv("PROCESSOR_MAX_MESSAGE_BYTES", "2000000")

    with pytest.raises(ConfigError, match="fetch.max.bytes=1048576"):
        load_settings()

    monkeypatch.setenv("PROCESSOR_MAX_MESSAGE_BYTES", "1048576")
    assert load_settings().max_message_bytes == 1048576


def test_config_file_is_read(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "settings.json",
        {"batch_size": 8, "group_id": "from-file", "topics": {"alerts": "file-alerts"}},
    )

    settings = load_settings(path)

    assert settings.batch_size == 8
    assert settings.group_id == "from-file"
    assert settings.topics.alerts == "file-alerts"


def test_config_file_named_by_environment_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = _write(tmp_path / "settings.json", {"batch_size": 9})
    monkeypatch.setenv("PROCESSOR_CONFIG_FILE", str(path))

    assert load_settings().batch_size == 9


def test_environment_variables_override_the_config_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = _write(tmp_path / "settings.json", {"batch_size": 8, "group_id": "from-file"})
    monkeypatch.setenv("PROCESSOR_BATCH_SIZE", "32")

    settings = load_settings(path)

    assert settings.batch_size == 32
    assert settings.group_id == "from-file"


def test_explicit_overrides_win_and_none_is_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = _write(tmp_path / "settings.json", {"batch_size": 8})
    monkeypatch.setenv("PROCESSOR_GROUP_ID", "env-group")

    settings = load_settings(path, batch_size=4, group_id=None)

    assert settings.batch_size == 4
    assert settings.group_id == "env-group"


@pytest.mark.parametrize("content", ["{not json", None])
def test_unreadable_config_file_raises_config_error(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "settings.json"
    if content is not None:
        path.write_text(content)

    with pytest.raises(ConfigError, match="settings.json"):
        load_settings(path)


def test_wrong_value_in_config_file_names_the_setting(tmp_path: Path) -> None:
    path = _write(tmp_path / "settings.json", {"device": "tpu"})

    with pytest.raises(ConfigError, match="PROCESSOR_DEVICE"):
        load_settings(path)


def test_empty_bootstrap_servers_means_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().embedded is True

    monkeypatch.setenv("PROCESSOR_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    settings = load_settings()

    assert settings.embedded is False
    assert settings.bootstrap_servers == "kafka-1:9092,kafka-2:9092"


def test_settings_are_frozen() -> None:
    settings = load_settings()

    with pytest.raises(pydantic.ValidationError):
        settings.batch_size = 1  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        settings.topics.alerts = "elsewhere"  # type: ignore[misc]
    assert settings.batch_size == 256
    assert settings.topics.alerts == "alerts"


def test_an_output_topic_equal_to_an_input_topic_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROCESSOR_TOPICS__TRANSACTIONS", "loop.raw")
    monkeypatch.setenv("PROCESSOR_TOPICS__DEAD_LETTERS", "loop.raw")
    with pytest.raises(ConfigError, match="loop.raw"):
        load_settings()


def test_consumer_kafka_that_is_not_json_names_its_own_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROCESSOR_CONSUMER_KAFKA", "{bad")
    with pytest.raises(ConfigError, match="PROCESSOR_CONSUMER_KAFKA must be a JSON object"):
        load_settings()


def test_fetch_max_bytes_of_the_consumer_alone_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROCESSOR_CONSUMER_KAFKA", '{"fetch.max.bytes": 1000}')
    with pytest.raises(ConfigError, match="fetch.max.bytes"):
        load_settings()
    monkeypatch.setenv("PROCESSOR_CONSUMER_KAFKA", '{"fetch.max.bytes": "lots"}')
    with pytest.raises(ConfigError, match="not a number of bytes"):
        load_settings()


def test_a_misspelt_variable_is_reported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PROCESSOR_BATCHSIZE", "32")
    with caplog.at_level("WARNING", logger="processor.config"):
        load_settings()
    assert "PROCESSOR_BATCHSIZE" in caplog.text
