"""Detectors on the score stream, and the decision layer's components."""

from stream_ae.detect._keys import BatchKeys

__all__ = ["BatchKeys"]
