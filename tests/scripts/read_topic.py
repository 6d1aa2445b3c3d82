#!/usr/bin/env python3
"""Reads a topic from the start with kafka-python, as a consumer written in
another language would, and checks that every record is a JSON event envelope
keyed by its order id. Prints a JSON summary; exits 1 on any bad record or if
fewer than --expect records arrive.

Usage: read_topic.py --brokers HOST:PORT --topic NAME --expect N
"""
import argparse
import json
import sys
import uuid

from kafka import KafkaConsumer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--expect", type=int, required=True)
    args = parser.parse_args()

    consumer = KafkaConsumer(
        args.topic,
        bootstrap_servers=args.brokers.split(","),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    records, problems, orders = 0, [], set()
    for message in consumer:
        records += 1
        try:
            key = message.key.decode("utf-8")
            uuid.UUID(key)
            envelope = json.loads(message.value)
            headers = {k: v.decode("utf-8") for k, v in message.headers}
            if envelope["stream_id"] != key:
                problems.append(f"offset {message.offset}: key {key} is not the envelope's order id")
            for field in ("event_id", "event_type", "schema_version", "payload", "version", "recorded_at"):
                if field not in envelope:
                    problems.append(f"offset {message.offset}: envelope lacks {field}")
            if headers.get("event_type") != envelope.get("event_type"):
                problems.append(f"offset {message.offset}: event_type header differs")
            orders.add(key)
        except (ValueError, KeyError, AttributeError, TypeError) as error:
            problems.append(f"offset {message.offset}: {error!r}")
        if records >= args.expect and not problems:
            break
    consumer.close()
    print(json.dumps({"records": records, "orders": len(orders), "problems": problems[:10]}))
    return 0 if records >= args.expect and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
