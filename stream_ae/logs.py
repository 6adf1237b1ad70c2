"""Configure structlog once, from the CLI: JSON when not on a terminal, console otherwise."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog


class _StderrLoggerFactory:
    """Make a ``PrintLogger`` on whatever ``sys.stderr`` is at the time."""

    def __call__(self, *args: object) -> structlog.PrintLogger:
        return structlog.PrintLogger(sys.stderr)


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto", level: str = "info"
) -> None:
    """Set up structlog (and stdlib logging) for the whole process. Call once, from ``cli``."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    lvl = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        # resolve sys.stderr when a logger is made, not at configure time: a replaced stream
        # (pytest capture, typer's CliRunner) must not leave loggers bound to a closed file
        logger_factory=_StderrLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
