#!/usr/bin/env bash
# Resolve the Apache Kafka broker and tools jars from Maven Central into the cache.
# Idempotent: a complete cache is reused. Usage: infra/kafka-fetch.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

stamp="$KAFKA_LIBS/.complete-$(sha1sum "$INFRA_DIR/pom.xml" | cut -c1-12)"
if [ -f "$stamp" ]; then
  exit 0
fi
command -v mvn >/dev/null || { log "Maven (mvn) is required to fetch the Kafka jars"; exit 1; }
command -v java >/dev/null || { log "Java 17+ is required to run Kafka"; exit 1; }
log "fetching Kafka jars into $KAFKA_LIBS (Maven Central)"
rm -rf "$KAFKA_LIBS"
mkdir -p "$KAFKA_LIBS"
mvn -q -B -Dstyle.color=never -f "$INFRA_DIR/pom.xml" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS"
touch "$stamp"
log "Kafka jars ready ($(ls "$KAFKA_LIBS" | wc -l) files)"
