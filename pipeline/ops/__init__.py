"""Operations: consumer lag, metrics, bulk re-embed by replay, dead letters.

One module per concept: `lag` (figures equal to Kafka's consumer-group tool),
`offsets` (moving a group's committed offsets), `replay` (starting, cancelling,
resuming, discarding a re-embed by topic replay), `progress` (its progress,
ETA and the switch to a fresh collection), `dlq` (inspect, retry, purge dead
letters), `status` (the one-screen overview), `metrics` (Prometheus).
Their edges are `pipeline.cli` (the commands) and `pipeline.http` (the service).
"""
