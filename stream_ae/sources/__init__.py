"""Sources: where raw messages come from (Kafka topics, files, historical topics)."""
