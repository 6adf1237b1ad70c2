"""Configuration: frozen pydantic models. Validation only, no side effects.

``Settings`` is the root; it reads a YAML/TOML file (``Settings.load(path)``)
and environment variables prefixed ``STREAM_AE_`` with ``__`` between levels,
e.g. ``STREAM_AE_KAFKA__BOOTSTRAP_SERVERS=broker:9092`` or
``STREAM_AE_ENGINE__THRESHOLD__Q=0.999``. Environment wins over the file.

>>> s = Settings()
>>> (s.engine.threshold.mode, s.kafka.guarantee)
('quantile', 'exactly_once')
"""

from __future__ import annotations

import copy
import json
import pathlib
import tomllib
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from stream_ae.errors import ConfigError


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- engine
class FeaturesConfig(_Frozen):
    """Which fields are features and how they become model inputs."""

    names: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Feature field names in model order. Empty: taken from the first valid record "
        "(JSON object keys in order, minus key/timestamp/label fields).",
    )
    lags: int | Literal["auto"] = Field(
        default="auto", description="Previous readings of the same key concatenated to each "
        "record (shingle length minus one): temporal context per key, so that a single sensor "
        "is a meaningful model input and collective anomalies are seen. 'auto': 8 for up to 7 "
        "features (9 s of context at 1 Hz), fewer for wider records so the model input stays "
        "near 64 columns, at least 1 (see lags_for); 0: each record on its own (i.i.d. "
        "tabular data).")
    diffs: bool = Field(default=False, description="Append first differences per key.")
    missing: Literal["reject", "ffill"] = Field(
        default="reject",
        description="NaN/inf/missing values: reject the record (dead letter) or carry the key's "
        "last value forward.",
    )
    max_keys: int = Field(default=100_000, ge=1, description="Per-key lag buffers kept (LRU): "
                          "the least recently seen key's history is dropped, so memory stays "
                          "bounded (about max_keys x (4 x features x max(lags, 1) + 200) bytes) "
                          "whatever the number of distinct keys.")

    def lags_for(self, n_raw: int) -> int:
        """The lags in force for records of ``n_raw`` features.

        >>> f = FeaturesConfig()
        >>> [f.lags_for(n) for n in (1, 7, 8, 38, 200)], FeaturesConfig(lags=3).lags_for(8)
        ([8, 8, 7, 1, 1], 3)
        """
        if self.lags != "auto":
            return self.lags
        return max(1, min(8, 64 // max(n_raw, 1) - 1))

    @field_validator("lags")
    @classmethod
    def _lag_range(cls, v: Any) -> Any:
        if v != "auto" and not 0 <= v <= 64:
            raise ValueError("lags must be 'auto' or 0..64")
        return v

    @field_validator("names", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("["):
                return tuple(json.loads(v))
            return tuple(x.strip() for x in v.split(",") if x.strip())
        return v


class ModelConfig(_Frozen):
    """The autoencoder: an MLP d -> hidden... -> bottleneck -> ...hidden -> d."""

    hidden: tuple[int, ...] = Field(default=(), description="Encoder hidden widths (the decoder "
                                    "mirrors them); empty: a linear autoencoder.")
    bottleneck: int = Field(default=0, ge=0, description="Code width; 0: a quarter of the model "
                            "inputs, at least 1 and always fewer than the inputs (a code as "
                            "wide as its input would reconstruct it exactly).")
    activation: Literal["relu", "tanh", "gelu", "elu", "silu"] = "elu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    lr: float = Field(default=1e-3, gt=0.0)
    seed: int = 0


class TrainingConfig(_Frozen):
    """Sliding mini-batches, warm-up and the training gate."""

    stride: int = Field(default=1024, ge=1,
                        description="Records scored between two learning steps.")
    window: int = Field(default=4096, ge=1, description="Replay buffer of recent gated (normal) "
                        "records each learning step trains on.")
    steps_per_stride: int = Field(default=1, ge=1, description="Optimizer steps per learning step.")
    batch_size: int = Field(default=2048, ge=1, description="Rows per optimizer step (sampled "
                            "from the window when smaller than it).")
    warmup: int = Field(default=1000, ge=0, description="Records at the start that are never "
                        "flagged; the scaler, model and threshold are fitted on them.")
    warmup_epochs: int = Field(default=100, ge=0, description="Epochs over the warm-up records "
                               "when warm-up ends.")
    warmup_fit: Literal["pca", "epochs"] = Field(default="pca", description="How a linear "
                                                 "autoencoder is fitted on the warm-up records: "
                                                 "'pca', its exact least-squares optimum in one "
                                                 "SVD, or 'epochs' of optimiser steps (always used "
                                                 "for a model with hidden layers).")
    warmup_batch_size: int = Field(default=64, ge=1, description="Rows per optimizer step in the "
                                   "warm-up epochs (small: many steps on few records).")
    gate: Literal["threshold", "none"] = Field(default="threshold", description="'threshold': "
                                               "flagged records never train the model.")
    clip_quantile: float = Field(default=0.9, gt=0.0, le=1.0, description="Records that pass "
                                 "the gate but score above this quantile of the threshold window "
                                 "are down-weighted to it (Huber-like cap on their influence).")
    holdout: float = Field(default=0.2, ge=0.0, lt=1.0, description="Fraction of the warm-up "
                           "(its most recent records) held out of the warm-up epochs; the initial "
                           "threshold comes from their out-of-sample scores (0: in-sample scores).")
    scaler_memory: int = Field(default=100_000, ge=1, description="Rows the running scaler "
                               "remembers: older statistics are down-weighted geometrically.")


class ThresholdConfig(_Frozen):
    """Rolling threshold on the scores of recent non-warm-up records."""

    mode: Literal["quantile", "mean_std"] = "quantile"
    q: float = Field(default=0.99, gt=0.0, lt=1.0)
    window: int = Field(default=10_000, ge=10)
    k: float = Field(default=3.0, gt=0.0, description="mean_std mode: mean + k * sd.")
    multiplier: float = Field(default=1.0, gt=0.0)
    floor: float = Field(default=0.0, ge=0.0)
    min_count: int = Field(default=100, ge=1, description="Scores needed (capped at `window`) "
                           "before the threshold flags anything, also after a re-warm.")
    flagged: Literal["raw", "capped"] = Field(default="capped", description="How flagged "
                                              "scores enter the window: at the statistic the "
                                              "threshold was computed from ('capped': a long "
                                              "anomaly cannot raise the threshold; a too-low one "
                                              "is left to the regime policy), or as they are.")


class DriftConfig(_Frozen):
    """River drift detector on the score stream, and what to do when it fires."""

    detector: Literal["adwin", "page_hinkley", "kswin", "none"] = "adwin"
    delta: float = Field(default=1e-5, gt=0.0, description="ADWIN delta / PH threshold scale "
                         "(smaller: fewer, surer detections).")
    min_ratio: float = Field(default=2.0, ge=1.0, description="A report-only detection becomes "
                             "a drift event only when the error level rose at least this "
                             "factor (a lasting rise of the error stream; falls and small "
                             "rises only restart the detector).")
    lr_boost: float = Field(default=1.0, ge=1.0, description="Learning-rate factor after drift "
                            "(1 and no re-warm: the detector only reports drift events).")
    boost_steps: int = Field(default=20, ge=0, description="Learning steps the boost lasts.")
    rewarm_threshold: bool = Field(default=False, description="Restart the threshold window "
                                   "from the records after the drift.")
    history: int = Field(default=4096, ge=16, description="The detector sees the last "
                         "history..2*history scores (bounded, replayable state).")

    @property
    def report_only(self) -> bool:
        """True when a detection only emits an event (no boost, no re-warm): the defaults."""
        return self.lr_boost == 1.0 and not self.rewarm_threshold


class DecisionConfig(_Frozen):
    """From scores to decisions: calibrated grades, a false-alarm budget, evidence, incidents.

    ``mode: budget`` (the default) calibrates each score into a tail probability ``p`` under
    the recent normal scores of its key (peaks over threshold with a generalized Pareto
    tail) and flags a record when ``p`` is below the single-record share of the budget, or
    when the key's accumulated evidence (a CUSUM of ``-ln p``) crosses the level the rest of
    the budget allows. ``quantile`` and ``mean_std`` keep the rolling threshold of
    ``engine.threshold`` instead (no grades beyond the same calibration, flags from it).
    """

    mode: Literal["budget", "quantile", "mean_std"] = "budget"
    false_alarm_rate: float = Field(default=3e-5, gt=0.0, lt=0.5, description="Expected false "
                                    "flags per record of normal data (budget mode). Alerts per "
                                    "key and day on a normal stream = rate x records per key and "
                                    "day: 3e-5 at 1 Hz is about 2.6 flagged records a day, "
                                    "fewer incidents (docs/engine.md#decisions).")
    point_share: float = Field(default=0.5, gt=0.0, lt=1.0, description="Share of the budget "
                               "spent on single extreme records; the rest on evidence.")
    evidence_k: float = Field(default=2.3, gt=0.0, description="CUSUM reference value on the "
                              "surprise -ln p: only records with p < exp(-k) add evidence "
                              "(2.3: p < 0.1).")
    evidence_cap: float = Field(default=2.0, ge=1.0, description="The evidence is capped at "
                                "this multiple of its alarm level, so it falls below the level "
                                "within a few records after a fault ends.")
    grade_decades: float = Field(default=10.0, gt=0.0, description="grade = -log10(p) / this, "
                                 "clipped to [0, 1]: 0.5 is a one-in-100,000 score.")
    calibration_window: int = Field(default=20_000, ge=100, description="Recent normal scores "
                                    "the tail is estimated from.")
    min_scores: int = Field(default=100, ge=10, description="Normal scores (the warm-up's "
                            "held-out ones count) the calibration needs before anything is "
                            "flagged.")
    key_min_records: int = Field(default=50, ge=1, description="Normal records a key needs "
                                 "before it is calibrated on its own level and can be flagged "
                                 "(before: its records are learned from, as normal).")
    quiet_records: int = Field(default=60, ge=1, description="Records of a key without a flag "
                               "that resolve its open incident.")
    update_every: int = Field(default=60, ge=1, description="Flagged records between two "
                              "'updated' messages of an incident.")
    drift_recent_records: int = Field(default=1000, ge=0, description="Alerts within this many "
                                      "records after a drift or regime event say "
                                      "context.drift_recent.")


class RegimeConfig(_Frozen):
    """Quiet after a new normal, per key: an incident that lasts is re-learned as normal."""

    enabled: bool = True
    after_records: int = Field(default=540, ge=1, description="Records of the key an incident "
                               "may last before the key's behaviour is declared its new normal "
                               "(540: nine minutes at 1 Hz, so that with the detection delay and "
                               "the re-learning at the next boundary the alarms of a new normal "
                               "end within ten minutes of the change).")
    after_seconds: float = Field(default=540.0, gt=0.0, description="... or this much event "
                                 "time, whichever comes first (records without timestamps "
                                 "count records only).")
    relearn_steps: int = Field(default=50, ge=0, description="Extra learning steps on the "
                               "key's recent records when it changes regime.")


class EngineConfig(_Frozen):
    """Everything the pure engine needs."""

    features: FeaturesConfig = FeaturesConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    threshold: ThresholdConfig = ThresholdConfig()
    drift: DriftConfig = DriftConfig()
    decision: DecisionConfig = DecisionConfig()
    regime: RegimeConfig = RegimeConfig()


# Engine settings that shape the learned state (buffer sizes, model and feature layout,
# optimiser state): a checkpoint taken under other values cannot continue under these. Every
# other engine setting (threshold decision, drift response, regime policy, learning rates of
# future steps...) only acts on records still to come and applies on restart.
LEARNED_STATE: tuple[str, ...] = (
    "features.*", "model.*",
    "training.window", "training.stride", "training.warmup", "training.scaler_memory",
    "threshold.window", "drift.detector", "drift.history", "decision.calibration_window",
    "regime.after_records",
)


def config_diff(a: BaseModel, b: BaseModel) -> dict[str, tuple[Any, Any]]:
    """Leaf settings that differ between two configs: ``{dotted path: (a's, b's)}``.

    >>> config_diff(ThresholdConfig(q=0.9), ThresholdConfig(q=0.99))
    {'q': (0.9, 0.99)}
    """
    flat_a, flat_b = _flatten(a.model_dump(mode="json")), _flatten(b.model_dump(mode="json"))
    return {k: (flat_a.get(k), flat_b.get(k)) for k in sorted(flat_a.keys() | flat_b.keys())
            if flat_a.get(k) != flat_b.get(k)}


def learned_state_diff(stored: EngineConfig, current: EngineConfig) -> tuple[str, ...]:
    """The learned-state settings (``LEARNED_STATE``) where ``current`` contradicts the
    configuration a snapshot was taken under; empty when the snapshot can continue under
    ``current``. Empty ``features.names`` in ``current`` means "whatever the data has" and
    contradicts nothing.

    >>> stored = EngineConfig(features=FeaturesConfig(names=("a", "b")))
    >>> learned_state_diff(stored, EngineConfig(threshold=ThresholdConfig(q=0.9)))
    ()
    >>> learned_state_diff(stored, EngineConfig(features=FeaturesConfig(lags=2),
    ...                                         training=TrainingConfig(window=64, batch_size=8)))
    ('features.lags', 'training.window')
    """
    if not current.features.names:
        current = current.model_copy(update={"features": current.features.model_copy(
            update={"names": stored.features.names})})
    return tuple(k for k in config_diff(stored, current) if _is_learned(k))


def _is_learned(path: str) -> bool:
    return any(path == rule or (rule.endswith(".*") and path.startswith(rule[:-1]))
               for rule in LEARNED_STATE)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out |= _flatten(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v}
    return out


# --------------------------------------------------------------------------- I/O
class RecordFormat(_Frozen):
    """How a JSON message maps to a record."""

    key_field: str = Field(default="key", description="Sensor key field; the Kafka message key "
                           "is used when the field is absent.")
    timestamp_field: str = Field(default="ts", description="Event time (epoch seconds/ms or "
                                 "ISO-8601); the Kafka timestamp is used when absent.")
    label_field: str | None = Field(default=None, description="Optional 0/1 label field.")
    max_message_bytes: int = Field(
        default=1_000_000, ge=64,
        description="Largest input message value decoded; larger ones are dead-lettered "
        "('oversized'). The producer's message.max.bytes (kafka.max_message_bytes) defaults to "
        "this plus 32 KiB so such a dead letter keeps its whole payload; a dead letter that "
        "would exceed the producer limit keeps a prefix and says so in its headers.")
    max_key_length: int = Field(default=256, ge=1, description="Longest sensor key (JSON "
                                "field, message key or file key column), in characters; longer "
                                "ones are dead-lettered ('key_too_long').")
    max_fields: int = Field(default=1000, ge=1, description="Most fields in one JSON object; "
                            "more: dead letter ('too_many_fields'). Also bounds the feature "
                            "names taken from the first record.")
    max_field_name_length: int = Field(default=128, ge=1, description="Longest feature name "
                                       "taken from a record when engine.features.names is "
                                       "empty; a record with a longer numeric field is not used "
                                       "for the names ('field_name_too_long').")


class KafkaConfig(_Frozen):
    """Kafka connection, topics and delivery guarantee."""

    bootstrap_servers: str = "localhost:9092"
    group_id: str = "stream-ae"
    input_topics: Annotated[tuple[str, ...], NoDecode] = ("sensors",)
    alerts_topic: str = "sensor-alerts"
    dead_letter_topic: str = "sensor-dead-letters"
    events_topic: str | None = Field(default="sensor-events", description="Drift/regime events; "
                                     "null disables them.")
    incidents_topic: str | None = Field(default="sensor-incidents", description="Incident "
                                        "lifecycle messages (opened/updated/resolved); null "
                                        "disables them.")
    guarantee: Literal["exactly_once", "at_least_once"] = "exactly_once"
    transactional_id: str | None = Field(default=None, description="Stable per instance; default "
                                         "'<group_id>-<hostname>'.")
    session_timeout_ms: int = 10_000
    max_message_bytes: int | None = Field(
        default=None, ge=16_384, description="Producer message.max.bytes: the largest alert, "
        "event or dead letter (value, key and headers) this service publishes; bigger dead "
        "letters are truncated to fit. Default: record.max_message_bytes + 32768. The output "
        "topics' (and the broker's) max.message.bytes must be at least this (Kafka's default "
        "1048588 fits the default 1032768).")
    fetch_max_bytes: int = Field(
        default=52_428_800, ge=1024, description="Consumer fetch.max.bytes (and "
        "receive.message.max.bytes above it); max.partition.fetch.bytes is set to "
        "max(1 MiB, the producer limit). Brokers return a larger message alone, so any "
        "input size is consumed; this bounds the memory one fetch takes.")
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    extra: dict[str, str] = Field(default_factory=dict, description="Any other librdkafka "
                                  "setting, passed through.")

    @field_validator("input_topics", mode="before")
    @classmethod
    def _split_topics(cls, v: Any) -> Any:
        if isinstance(v, str):
            return tuple(x.strip() for x in v.split(",") if x.strip())
        return v


class BatchingConfig(_Frozen):
    """Mini-batches across polls, with a latency bound."""

    max_records: int = Field(default=4096, ge=1)
    max_wait_ms: int = Field(default=200, ge=1)
    adaptive: bool = Field(default=True, description="A batch is also due as soon as the "
                           "consumer has nothing more fetched: small batches when input is "
                           "slow (latency), full ones under load (throughput). False: wait "
                           "for max_records or max_wait_ms.")


class KafkaStoreConfig(_Frozen):
    """The ``kafka`` checkpoint store: a compacted changelog topic per input topic."""

    topic: str = Field(default="{group_id}-{topic}-checkpoints", description="Changelog topic "
                       "name; `{group_id}` and `{topic}` (the input topic) are filled in. It has "
                       "as many partitions as the input topic (created with "
                       "cleanup.policy=compact when missing): input partition p's state is in "
                       "changelog partition p.")
    chunk_bytes: int = Field(default=512 * 1024, ge=1024, le=4 * 1024 * 1024,
                             description="Largest changelog record: bigger snapshots are split "
                             "into chunks of this size (keep it below the broker's "
                             "message.max.bytes, 1 MiB by default).")
    replication_factor: int = Field(default=-1, ge=-1, description="Replication factor of a "
                                    "changelog topic the service creates; -1: the broker's "
                                    "default.")
    timeout_s: float = Field(default=60.0, gt=0.0, description="Longest wait to read a "
                             "changelog partition to its end or to write a checkpoint.")


class S3StoreConfig(_Frozen):
    """The ``s3`` checkpoint store: one object per checkpoint in an S3-compatible bucket.

    Credentials come from the usual AWS chain (``AWS_ACCESS_KEY_ID`` /
    ``AWS_SECRET_ACCESS_KEY`` environment variables, a web identity token, an instance role).
    """

    bucket: str | None = Field(default=None, description="Bucket name (required for the s3 "
                               "store).")
    prefix: str = Field(default="stream-ae/", description="Key prefix: objects are "
                        "`<prefix><topic>/<partition>/ckpt-<seq>.bin`.")
    endpoint_url: str | None = Field(default=None, description="S3 API endpoint (MinIO, Ceph, "
                                     "a cloud's S3-compatible service); null: AWS.")
    region: str | None = Field(default=None, description="Region; null: the AWS default chain.")


class CheckpointConfig(_Frozen):
    """Periodic atomic snapshots of every partition's engine and position."""

    store: Literal["directory", "kafka", "s3"] = Field(default="directory", description="Where "
                                                        "checkpoints live. 'directory': files "
                                                        "under `directory` (scale-out needs it "
                                                        "shared by every instance); 'kafka': a "
                                                        "compacted changelog topic (state moves "
                                                        "with the partition); 's3': an "
                                                        "S3-compatible bucket.")
    directory: pathlib.Path = Field(default=pathlib.Path("checkpoints"), description="Root of "
                                    "the directory store.")
    interval_s: float = Field(default=60.0, gt=0.0)
    interval_records: int = Field(default=100_000, ge=1)
    keep: int = Field(default=3, ge=1, description="Checkpoints (generations) kept per "
                      "partition; older ones are deleted (kafka: tombstoned).")
    on_config_mismatch: Literal["fail", "reset", "keep_stored"] = Field(
        default="fail", description="When the configured engine contradicts a checkpoint's "
        "learned state (features, model, training window...; see "
        "`stream_ae.config.learned_state_diff`): 'fail' stops the service with an error naming "
        "the fields; 'reset' drops the stored state (a fresh engine from the committed offset); "
        "'keep_stored' keeps running under the checkpoint's engine configuration. Settings "
        "that are not learned state (thresholds, drift response...) always take the new "
        "values.")
    kafka: KafkaStoreConfig = KafkaStoreConfig()
    s3: S3StoreConfig = S3StoreConfig()

    @model_validator(mode="after")
    def _store_settings(self) -> CheckpointConfig:
        if self.store == "s3" and not self.s3.bucket:
            raise ValueError("checkpoint.store 's3' needs checkpoint.s3.bucket")
        return self


class MetricsConfig(_Frozen):
    """The HTTP endpoint with /metrics, /healthz, /readyz."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535)


class ServiceConfig(_Frozen):
    """Liveness and give-up rules of the long-running service."""

    progress_timeout_s: float = Field(default=300.0, gt=0.0, description="/healthz answers 503 "
                                      "when no batch was committed for this long while there "
                                      "is input (pending records or consumer lag > 0), or "
                                      "when one owned partition with a lag has not moved for "
                                      "this long, so an orchestrator restarts a wedged "
                                      "instance.")
    max_restarts_same_offset: int = Field(default=5, ge=1, description="Consecutive batch "
                                          "failures at the same committed offsets (each one "
                                          "restarts the service in-process) after which it "
                                          "gives up: error 'service_gave_up', exit status 1. "
                                          "Failures before a batch (e.g. a broker outage while "
                                          "connecting) do not count.")
    restart_backoff_s: float = Field(default=2.0, ge=0.0, description="Wait before an "
                                     "in-process restart.")


class LogConfig(_Frozen):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


# --------------------------------------------------------------------------- root
class Settings(BaseSettings):
    """The effective configuration: defaults < config file < environment."""

    model_config = SettingsConfigDict(
        env_prefix="STREAM_AE_", env_nested_delimiter="__", env_parse_none_str="null",
        frozen=True, extra="forbid",
    )

    engine: EngineConfig = EngineConfig()
    record: RecordFormat = RecordFormat()
    kafka: KafkaConfig = KafkaConfig()
    batching: BatchingConfig = BatchingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    metrics: MetricsConfig = MetricsConfig()
    service: ServiceConfig = ServiceConfig()
    log: LogConfig = LogConfig()

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        t = self.engine.training
        if t.batch_size > t.window:
            raise ValueError("engine.training.batch_size must be <= engine.training.window")
        names, r = self.engine.features.names, self.record
        if len(names) > r.max_fields or any(len(n) > r.max_field_name_length for n in names):
            raise ValueError("engine.features.names exceed record.max_fields or "
                             "record.max_field_name_length")
        if producer_max_bytes(self) > self.kafka.fetch_max_bytes:
            raise ValueError("kafka.fetch_max_bytes must be >= the producer limit "
                             "(kafka.max_message_bytes)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # environment beats values given at init (the file), as operators expect
        return (env_settings, init_settings, file_secret_settings)

    @classmethod
    def load(cls, path: str | pathlib.Path | None = None, **overrides: Any) -> Settings:
        """Read a YAML or TOML file (optional), then the environment.

        Raises ``ConfigError`` with every validation problem listed.
        """
        data: dict[str, Any] = read_config_file(path) if path else {}
        _deep_update(data, overrides)
        try:
            return cls(**data)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc


def producer_max_bytes(settings: Settings) -> int:
    """The producer's ``message.max.bytes``: ``kafka.max_message_bytes`` or the input limit
    plus room for a dead letter's key and headers.

    >>> producer_max_bytes(Settings())
    1032768
    """
    explicit = settings.kafka.max_message_bytes
    return explicit if explicit is not None else settings.record.max_message_bytes + 32_768


def read_config_file(path: str | pathlib.Path) -> dict[str, Any]:
    p = pathlib.Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from exc
    try:
        data = tomllib.loads(text) if p.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse config file {p}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level")
    return data


def _deep_update(base: dict[str, Any], upd: dict[str, Any]) -> None:
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v


# --------------------------------------------------------------------------- --set overrides
def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``dotted.key=value`` strings (the CLI's ``--set``) as one nested mapping.

    Values are read as YAML scalars or flow collections, as in a config file.

    >>> parse_overrides(["engine.features.lags=8", "kafka.input_topics=[a, b]",
    ...                  "engine.features.diffs=true", "kafka.events_topic=null"])
    {'engine': {'features': {'lags': 8, 'diffs': True}}, 'kafka': {'input_topics': ['a', 'b'], \
'events_topic': None}}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set expects dotted.key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse {raw!r}: {exc}") from exc
        _deep_update(out, _nest(parts, value))
    return out


def with_overrides(settings: Settings, overrides: dict[str, Any]) -> Settings:
    """``settings`` with ``overrides`` applied on top (they win over file and environment),
    validated like a config file: a ``ConfigError`` lists every problem.

    >>> s = with_overrides(Settings(), parse_overrides(["engine.threshold.q=0.999"]))
    >>> s.engine.threshold.q
    0.999
    >>> with_overrides(Settings(), {"engine": {"threshold": {"qq": 1}}})
    Traceback (most recent call last):
    ...
    stream_ae.errors.ConfigError: 1 validation error for Settings
    engine.threshold.qq
      Extra inputs are not permitted ...
    """
    if not overrides:
        return settings
    data = settings.model_dump(exclude_unset=False)  # python mode: secrets stay SecretStr
    _deep_update(data, overrides)
    try:
        # the environment is in `data` already and must not win over the command line: an
        # environment prefix no variable name can have (NUL) turns that layer off
        return Settings(_env_prefix="\0", **data)  # type: ignore[call-arg]
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``overrides`` laid over it, section by section.

    >>> merged({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}})
    {'a': {'b': 1, 'c': 3}}
    """
    out = copy.deepcopy(base)
    _deep_update(out, copy.deepcopy(overrides))
    return out


def _nest(parts: Sequence[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {parts[-1]: value}
    for p in reversed(parts[:-1]):
        out = {p: out}
    return out
