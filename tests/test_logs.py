"""Log output: in JSON mode every line is one JSON object, library messages included."""

from __future__ import annotations

import io
import json
import logging

import structlog

from runtime.logs import configure_logging


def test_library_messages_rendered_as_json():
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    logging.getLogger("aiokafka").error("Unable connect to node with id %s", 1)
    structlog.get_logger("agent_autoscaler").info("decision", workload="w", final_replicas=3)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["event"] == "Unable connect to node with id 1"
    assert lines[0]["logger"] == "aiokafka"
    assert lines[0]["level"] == "error"
    assert lines[1]["event"] == "decision"
    assert lines[1]["final_replicas"] == 3
