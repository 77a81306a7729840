#!/usr/bin/env python3
"""An OTLP/HTTP logs receiver for the tests, independent of the daemon's Rust crate:
it decodes with the OpenTelemetry project's official Python protobuf definitions
(PyPI opentelemetry-proto). Usage: receiver.py PORT_FILE OUT_JSONL

Listens on 127.0.0.1 (a free port, written to PORT_FILE once listening), answers
POST /v1/logs with an empty ExportLogsServiceResponse, and appends one JSON object
per log record to OUT_JSONL: its resource and scope, every LogRecord field, the
attributes as a map of typed values (arrays as lists)."""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    if kind is None:
        return None
    return getattr(v, kind)


def attrs(kvs):
    out = {}
    for kv in kvs:
        if kv.key in out:
            raise ValueError(f"attribute {kv.key} twice")
        out[kv.key] = value(kv.value)
    return out


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        ok = (
            self.path == "/v1/logs"
            and self.headers.get("Content-Type") == "application/x-protobuf"
        )
        if ok:
            req = ExportLogsServiceRequest.FromString(body)
            with open(self.server.out, "a") as f:
                for rl in req.resource_logs:
                    resource = attrs(rl.resource.attributes)
                    for sl in rl.scope_logs:
                        for r in sl.log_records:
                            f.write(json.dumps({
                                "resource": resource,
                                "scope": {"name": sl.scope.name, "version": sl.scope.version},
                                "time_unix_nano": r.time_unix_nano,
                                "observed_time_unix_nano": r.observed_time_unix_nano,
                                "severity_number": r.severity_number,
                                "severity_text": r.severity_text,
                                "body": value(r.body),
                                "event_name": r.event_name,
                                "attributes": attrs(r.attributes),
                            }) + "\n")
            reply = ExportLogsServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
        else:
            reply = b"not an OTLP logs request"
            self.send_response(400)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def main():
    port_file, out = sys.argv[1], sys.argv[2]
    server = HTTPServer(("127.0.0.1", 0), Handler)
    server.out = out
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
