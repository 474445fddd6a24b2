"""Edge runtime of mgs-rack: capture, ROIs, inference, aggregation, alerts, MQTT publishing."""

__version__ = "0.1.0"
