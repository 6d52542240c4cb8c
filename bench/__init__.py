"""Benchmarks of the bus: raw MQTT baselines, a light device fleet and the harness that runs and reports them."""
