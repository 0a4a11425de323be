#!/usr/bin/env bash
# Copy the jars of an Apache Kafka broker (KAFKA_VERSION in versions.env) from
# Maven Central into $AUTOSCALER_CACHE/kafka-<version>/libs.
# Does nothing when the completion stamp of an earlier run exists.
set -euo pipefail
. "$(dirname "$0")/common.sh"

KAFKA_HOME="$AUTOSCALER_CACHE/kafka-$KAFKA_VERSION"
LIBS_DIR="$KAFKA_HOME/libs"
STAMP="$KAFKA_HOME/.complete"
POM="$REALSTACK_DIR/kafka/pom.xml"

if [[ -f "$STAMP" && -d "$LIBS_DIR" ]]; then
    log "cache hit: $LIBS_DIR"
    exit 0
fi

start=$SECONDS
mkdir -p "$KAFKA_HOME"
staging_dir="$(mktemp -d "$KAFKA_HOME/libs.tmp.XXXXXX")"
trap 'rm -rf "$staging_dir"' EXIT

# Maven 3.8's built-in dependency plugin is 2.8, so name a current one.
# Debian's Maven 3.8.7 prints color reset codes even in batch mode, so its
# output goes to a log that is shown only when the command fails.
mvn_log="$KAFKA_HOME/mvn.log"
if ! mvn -B -q --no-transfer-progress -f "$POM" \
    -Dkafka.version="$KAFKA_VERSION" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$staging_dir" >"$mvn_log" 2>&1; then
    cat "$mvn_log" >&2
    log "error: mvn copy-dependencies failed for kafka_2.13 $KAFKA_VERSION (output above, also in $mvn_log)"
    exit 1
fi

jar_count=$(find "$staging_dir" -name '*.jar' | wc -l)
if [[ ! -f "$staging_dir/kafka_2.13-$KAFKA_VERSION.jar" ]]; then
    log "error: kafka_2.13-$KAFKA_VERSION.jar missing after copy-dependencies ($jar_count jars in $staging_dir)"
    exit 1
fi

rm -rf "$LIBS_DIR"
mv "$staging_dir" "$LIBS_DIR"
trap - EXIT

# A JVM start that loads the broker's storage tool checks that the classpath is complete.
java -cp "$LIBS_DIR/*" kafka.tools.StorageTool random-uuid >/dev/null
date -u +%Y-%m-%dT%H:%M:%SZ > "$STAMP"
log "copied $jar_count jars ($(du -sh "$LIBS_DIR" | cut -f1)) into $LIBS_DIR in $((SECONDS - start)) s"
