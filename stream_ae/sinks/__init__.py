"""Sinks: where alerts, dead letters and events go (Kafka topics, memory, files)."""
