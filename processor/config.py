"""Settings: one frozen object read once at start from PROCESSOR_* variables and an optional file.

librdkafka settings pass through by their own dotted names in ``PROCESSOR_KAFKA`` (a JSON
object), e.g. ``PROCESSOR_KAFKA='{"security.protocol": "SASL_SSL"}'``.
"""

from __future__ import annotations

import json
import logging
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from processor.errors import ProcessorError

_FILE_VALUES: ContextVar[dict[str, object] | None] = ContextVar("_FILE_VALUES", default=None)
KafkaConf = Annotated[dict[str, str | int | float | bool], NoDecode]


log = logging.getLogger(__name__)


class ConfigError(ProcessorError):
    """A setting is missing or wrong; the message names the setting and the fix."""


class Topics(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    transactions: str = "transactions.raw"
    documents: str = "documents.raw"
    transactions_enriched: str = "transactions.enriched"
    documents_enriched: str = "documents.enriched"
    alerts: str = "alerts"
    dead_letters: str = "events.dlq"

    def inputs(self) -> list[str]:
        return [self.transactions, self.documents]

    def outputs(self) -> list[str]:
        return [
            self.transactions_enriched,
            self.documents_enriched,
            self.alerts,
            self.dead_letters,
        ]

    def all(self) -> list[str]:
        return [
            self.transactions,
            self.documents,
            self.transactions_enriched,
            self.documents_enriched,
            self.alerts,
            self.dead_letters,
        ]


class Settings(BaseSettings):
    """Every setting of ``processor run``; the environment variable is PROCESSOR_<NAME>."""

    model_config = SettingsConfigDict(
        env_prefix="PROCESSOR_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    bootstrap_servers: str = Field(
        default="", description="Kafka bootstrap servers; empty starts the embedded broker"
    )
    group_id: str = "finstream-processor"
    topics: Topics = Field(default_factory=Topics)
    kafka: KafkaConf = Field(
        default_factory=dict, description="librdkafka settings by their own names (JSON object)"
    )
    consumer_kafka: KafkaConf = Field(
        default_factory=dict, description="librdkafka settings for the consumer only"
    )
    producer_kafka: KafkaConf = Field(
        default_factory=dict, description="librdkafka settings for the producer only"
    )
    create_topics: bool = Field(
        default=False, description="create missing topics at start (always on when embedded)"
    )
    delivery: Literal["at-least-once", "exactly-once"] = Field(
        default="at-least-once",
        description="exactly-once: one Kafka transaction per batch, offsets inside it",
    )
    transactional_id: str = Field(
        default="",
        description="exactly-once: the producer's transactional.id (default: "
        "<group>-<host>-<slot>, the lowest slot no live process on this host holds, "
        "so a restarted replica takes over its predecessor's id)",
    )
    transaction_timeout_s: float = Field(default=30.0, gt=0, le=900)
    model_dir: Path = Path("artifacts/model")
    device: Literal["auto", "cuda", "cpu"] = "auto"
    batch_size: int = Field(default=256, ge=1, le=65536)
    batch_max_wait_ms: int = Field(default=50, ge=0, le=60_000)
    batch_max_tokens: int = Field(
        default=8192, ge=256, description="token budget of one document batch"
    )
    max_in_flight: int = Field(default=4096, ge=1, description="events held before pausing")
    max_document_chunks: int = Field(
        default=64, ge=1, description="chunks embedded per document; more is marked truncated"
    )
    max_message_bytes: int = Field(default=1_000_000, ge=1024)
    embedding_encoding: Literal["float_list", "base64_f32", "base64_f16", "none"] = "float_list"
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(default=9400, ge=0, le=65535)
    commit_interval_ms: int = Field(default=1000, ge=10)
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    embedded_broker_port: int = Field(default=9092, ge=1, le=65535)
    partitions: int = Field(default=3, ge=1, description="partitions of topics this creates")
    stop_when_drained: bool = Field(
        default=False, description="exit once every input partition is consumed and delivered"
    )
    idle_exit_s: float = Field(default=3.0, gt=0, description="drained-and-idle time before exit")
    test_batch_delay_ms: int = Field(
        default=0, ge=0, description="test hook: sleep this long per batch (a slow model)"
    )
    test_commit_delay_ms: int = Field(
        default=0,
        ge=0,
        description="test hook: exactly-once, sleep this long inside each transaction after "
        "its outputs are acknowledged and before it commits",
    )
    stats_file: Path | None = Field(default=None, description="write run counters here on exit")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        file_settings = InitSettingsSource(settings_cls, init_kwargs=_FILE_VALUES.get() or {})
        return init_settings, env_settings, file_settings

    @field_validator("kafka", "consumer_kafka", "producer_kafka", mode="before")
    @classmethod
    def _parse_kafka(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            name = f"PROCESSOR_{info.field_name.upper()}"
            try:
                return json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"{name} must be a JSON object: {exc}") from None
        return value

    @model_validator(mode="after")
    def _check_topics(self) -> Settings:
        names = self.topics.all()
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(
                f"PROCESSOR_TOPICS__*: topic {repeated} is used for two roles; every input and "
                "output topic must differ (an output read back as input loops forever)"
            )
        return self

    @model_validator(mode="after")
    def _check_limits(self) -> Settings:
        reserved = {"bootstrap.servers", "group.id", "enable.auto.commit"}
        clash = reserved & (set(self.kafka) | set(self.consumer_kafka) | set(self.producer_kafka))
        if clash:
            raise ValueError(
                f"PROCESSOR_KAFKA sets {sorted(clash)}: use PROCESSOR_BOOTSTRAP_SERVERS / "
                "PROCESSOR_GROUP_ID instead; auto commit is always off"
            )
        consumer = {**self.kafka, **self.consumer_kafka}
        try:
            fetch_max = int(consumer.get("fetch.max.bytes", 52_428_800))
        except ValueError:
            raise ValueError(
                f"fetch.max.bytes={consumer['fetch.max.bytes']!r} in PROCESSOR_KAFKA or "
                "PROCESSOR_CONSUMER_KAFKA is not a number of bytes"
            ) from None
        if self.max_message_bytes > fetch_max:
            raise ValueError(
                f"PROCESSOR_MAX_MESSAGE_BYTES={self.max_message_bytes} exceeds the consumer's "
                f"fetch.max.bytes={fetch_max}: lower it or raise fetch.max.bytes"
            )
        return self

    @property
    def embedded(self) -> bool:
        return not self.bootstrap_servers


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Read settings: explicit overrides beat environment variables, which beat the JSON file.

    Raises ConfigError naming each wrong setting and its environment variable.
    """
    values: dict[str, object] = {}
    file_values: dict[str, object] = {}
    path = config_file or (Path(p) if (p := os.environ.get("PROCESSOR_CONFIG_FILE")) else None)
    if path is not None:
        try:
            file_values = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    _warn_unknown_variables()
    token = _FILE_VALUES.set(file_values)
    try:
        return Settings(**values)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = "_".join(str(p) for p in err["loc"]).upper()
            name = f"PROCESSOR_{loc}" if loc else "settings"
            lines.append(f"  {name}: {err['msg']}")
        raise ConfigError("invalid settings:\n" + "\n".join(lines)) from None
    finally:
        _FILE_VALUES.reset(token)


OTHER_VARIABLES = {
    "PROCESSOR_CONFIG_FILE",
    "PROCESSOR_LOG_LEVEL",
    "PROCESSOR_EMBEDDING_MODEL_PATH",
}


def _warn_unknown_variables() -> None:
    """A misspelt PROCESSOR_* variable would otherwise be ignored without a word."""
    known = {f"PROCESSOR_{name.upper()}" for name in Settings.model_fields} | OTHER_VARIABLES
    for name in sorted(os.environ):
        base = name.split("__")[0]
        if name.startswith("PROCESSOR_") and base not in known:
            log.warning("unknown setting %s is ignored (see README.md, Configuration)", name)
