"""librdkafka settings shared by the consumer and producer code, and their error callback.

No client library is imported here: ``sources/kafka.py`` (the only consumer code) and
``sinks/kafka.py`` (the only producer code) build their clients from these settings.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from stream_ae.config import KafkaConfig

log = structlog.get_logger()


def client_config(kafka: KafkaConfig) -> dict[str, Any]:
    """librdkafka settings shared by consumers and producers: bootstrap, security, ``extra``.

    >>> from pydantic import SecretStr
    >>> kafka = KafkaConfig(bootstrap_servers="b:9092", security_protocol="SASL_SSL",
    ...                     sasl_mechanism="PLAIN", sasl_username="svc",
    ...                     sasl_password=SecretStr("s3cret"), extra={"client.id": "ae"})
    >>> c = client_config(kafka)
    >>> (c["bootstrap.servers"], c["security.protocol"], c["sasl.password"], c["client.id"])
    ('b:9092', 'SASL_SSL', 's3cret', 'ae')
    >>> "s3cret" in repr(kafka) or "s3cret" in kafka.model_dump_json()
    False
    """
    conf: dict[str, Any] = {"bootstrap.servers": kafka.bootstrap_servers}
    optional = {
        "security.protocol": kafka.security_protocol, "sasl.mechanism": kafka.sasl_mechanism,
        "sasl.username": kafka.sasl_username, "ssl.ca.location": kafka.ssl_ca_location,
        "sasl.password": kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
    }
    conf.update({k: v for k, v in optional.items() if v is not None})
    conf.update(kafka.extra)
    return conf


class ErrorLog:
    """librdkafka ``error_cb``: log each error code at most once per ``every`` seconds
    (a broker outage reports a connection failure many times a second).

    >>> e = ErrorLog(every=60.0)
    >>> e.should_log("_TRANSPORT", now=0.0), e.should_log("_TRANSPORT", now=1.0)
    (True, False)
    """

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last: dict[str, float] = {}

    def should_log(self, code: str, now: float) -> bool:
        if now - self._last.get(code, -self.every) < self.every:
            return False
        self._last[code] = now
        return True

    def __call__(self, err: Any) -> None:  # a confluent_kafka.KafkaError
        if err.fatal() or self.should_log(err.name(), time.monotonic()):
            log.warning("kafka_client_error", code=err.name(), reason=err.str(),
                        fatal=err.fatal())
