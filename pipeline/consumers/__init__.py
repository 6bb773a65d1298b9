"""Consumers: the batch worker they share, one embedding consumer per model, the query service."""
