"""sonicbus: music embedding and recommendation pipeline on Kafka and Milvus."""

__version__ = "0.1.0"
