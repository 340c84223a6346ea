#!/usr/bin/env bash
# Gathers a runnable Apache Kafka broker classpath from Maven Central into .cache/kafka/<version>/libs.
# Idempotent: a finished install is marked with a stamp file and skipped next time.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
LOG4J_VERSION="${LOG4J_VERSION:-2.24.3}"
DEST="$ROOT/.cache/kafka/$KAFKA_VERSION"
STAMP="$DEST/.installed"
[ -f "$STAMP" ] && exit 0
mkdir -p "$DEST/libs"
POM="$DEST/pom.xml"
cat >"$POM" <<POMEOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.reelay</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
POMEOF
echo "install-kafka: resolving kafka_2.13:$KAFKA_VERSION from Maven Central" >&2
mvn -B -q -f "$POM" org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$DEST/libs"
touch "$STAMP"
