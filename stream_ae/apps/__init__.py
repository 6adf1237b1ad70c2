"""Programs around the detector: the demo, the sensor simulator and the embedded broker.

They need the ``demo`` extra (rich, the embedded test broker); the service does not.
"""
