"""The long-running service: batches from a group source through per-partition processors
to a sink, with checkpoints.

* :mod:`~stream_ae.service.batcher`: a pure deadline accumulator (when is a batch due);
* :mod:`~stream_ae.service.restore`: checkpoint + committed offset -> where a partition
  starts and from where it publishes; checkpoint scheduling;
* :mod:`~stream_ae.service.loop`: the loop that only moves data;
* :mod:`~stream_ae.service.main`: signals, gc, the metrics server and the restart policy.
"""
