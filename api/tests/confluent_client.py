"""Drives the OMS against Confluent's own Python client (confluent-kafka[avro]).

1. The schema registry through SchemaRegistryClient: register (twice: same id), get by id, get the
   latest version, check compatibility both ways, and set and read compatibility config.
2. The orders topic through a Kafka consumer and AvroDeserializer: every event decoded.

Reads OMS_REGISTRY_URL, OMS_BROKERS, OMS_TOPIC and OMS_EVENTS (how many to read); prints one JSON
object with what it saw, for the Rust test to check.
"""
import json
import os
import sys
import time
import uuid

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

V1 = json.dumps({"type": "record", "name": "Probe", "namespace": "py.test",
                 "fields": [{"name": "id", "type": "string"}]})
V2 = json.dumps({"type": "record", "name": "Probe", "namespace": "py.test",
                 "fields": [{"name": "id", "type": "string"},
                            {"name": "note", "type": ["null", "string"], "default": None}]})
BREAKING = json.dumps({"type": "record", "name": "Probe", "namespace": "py.test",
                       "fields": [{"name": "id", "type": "string"}, {"name": "qty", "type": "int"}]})


def registry_checks(client):
    subject = f"py-{uuid.uuid4().hex}-value"
    first = client.register_schema(subject, Schema(V1, "AVRO"))
    again = client.register_schema(subject, Schema(V1, "AVRO"))
    fetched = client.get_schema(first)
    latest = client.get_latest_version(subject)
    compatible = client.test_compatibility(subject, Schema(V2, "AVRO"))
    breaking = client.test_compatibility(subject, Schema(BREAKING, "AVRO"))
    client.set_compatibility(subject_name=subject, level="FULL")
    level = client.get_compatibility(subject_name=subject)
    return {
        "id": first,
        "same_id_again": again == first,
        "fetched_name": json.loads(fetched.schema_str)["name"],
        "latest_version": latest.version,
        "latest_id": latest.schema_id,
        "v2_compatible": compatible,
        "breaking_compatible": breaking,
        "level": level,
    }


def plain(value):
    """JSON-safe: decimals and uuids as text, datetimes as epoch milliseconds."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if hasattr(value, "timestamp"):
        return round(value.timestamp() * 1000)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def consume(client, brokers, topic, wanted):
    deserialize = AvroDeserializer(client)
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"py-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    consumer.subscribe([topic])
    events, deadline = [], time.monotonic() + 60
    try:
        while len(events) < wanted and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error():
                raise RuntimeError(str(message.error()))
            headers = {k: v.decode() for k, v in (message.headers() or [])}
            value = deserialize(message.value(), SerializationContext(topic, MessageField.VALUE, message.headers()))
            events.append({"key": message.key().decode(), "type": headers.get("event-type"),
                           "schema_id": int.from_bytes(message.value()[1:5], "big"), "value": plain(value)})
    finally:
        consumer.close()
    return events


def main():
    client = SchemaRegistryClient({"url": os.environ["OMS_REGISTRY_URL"]})
    result = {"registry": registry_checks(client),
              "events": consume(client, os.environ["OMS_BROKERS"], os.environ["OMS_TOPIC"],
                                int(os.environ["OMS_EVENTS"]))}
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
