"""Settings shared by every test and doctest (one place, not one copy per test module)."""

from __future__ import annotations

import os

import structlog

# one torch thread, as the service runs (PERFORMANCE_NOTES); must precede torch's import
os.environ.setdefault("OMP_NUM_THREADS", "1")

# log events are asserted with structlog.testing.capture_logs; otherwise they stay quiet,
# so doctests compare only what their examples print
structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
