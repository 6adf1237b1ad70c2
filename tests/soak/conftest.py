"""The soak is a script (``make soak``), not a test module: pytest does not collect it."""

collect_ignore = ["soak.py"]
