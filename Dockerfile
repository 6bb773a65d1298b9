# The sonicbus image: one image, every process (the command picks which).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg libsndfile1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY models ./models
COPY infra ./infra
RUN pip install --no-cache-dir .
RUN useradd --create-home sonicbus && mkdir -p /var/lib/sonicbus && chown sonicbus /var/lib/sonicbus
USER sonicbus
ENTRYPOINT []
CMD ["sonicbus", "--help"]
