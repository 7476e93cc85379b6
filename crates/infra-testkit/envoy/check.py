#!/usr/bin/env python3
"""Plays Envoy's side of ext_authz over gRPC: sends the CheckRequest Envoy
sends (envoy.service.auth.v3.Authorization/Check, from Envoy's published
protos in PyPI's xds-protos, over grpcio with TLS), prints the answer as one
JSON line.

  check.py --target localhost:PORT --ca CA.pem --host HOST --path /p
           [--method GET] [--header NAME=VALUE]... [--source 10.0.0.9]
"""
import argparse
import json
import sys

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--path", default="/")
    p.add_argument("--method", default="GET")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--source", default="192.0.2.10")
    a = p.parse_args()

    req = external_auth_pb2.CheckRequest()
    sock = req.attributes.source.address.socket_address
    sock.address = a.source
    sock.port_value = 40000
    http = req.attributes.request.http
    http.id = "1"
    http.method = a.method
    http.host = a.host
    http.path = a.path
    http.scheme = "https"
    http.protocol = "HTTP/1.1"
    # Envoy sends the pseudo-headers and the request's headers, lower case.
    http.headers[":authority"] = a.host
    http.headers[":method"] = a.method
    http.headers[":path"] = a.path
    http.headers[":scheme"] = "https"
    for h in a.header:
        k, _, v = h.partition("=")
        k = k.lower()
        # Envoy joins repeated headers with ",", cookies with "; ".
        if k in http.headers:
            v = http.headers[k] + ("; " if k == "cookie" else ",") + v
        http.headers[k] = v

    with open(a.ca, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    with grpc.secure_channel(a.target, creds, options=[("grpc.ssl_target_name_override", "localhost")]) as ch:
        stub = external_auth_pb2_grpc.AuthorizationStub(ch)
        try:
            r = stub.Check(req, timeout=10)
        except grpc.RpcError as e:
            print(json.dumps({"rpc_error": str(e.code()), "details": e.details()}))
            return 1

    out = {"status": r.status.code, "message": r.status.message}
    if r.HasField("ok_response"):
        ok = r.ok_response
        out["ok"] = {
            "headers": {h.header.key: h.header.value for h in ok.headers},
            "append_actions": {h.header.key: h.append_action for h in ok.headers},
            "headers_to_remove": list(ok.headers_to_remove),
        }
    if r.HasField("denied_response"):
        d = r.denied_response
        out["denied"] = {
            "http_status": d.status.code,
            "headers": {h.header.key: h.header.value for h in d.headers},
            "body": d.body,
        }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
