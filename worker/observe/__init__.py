"""What ops see: structured logs, Prometheus metrics and the metrics exporter."""
