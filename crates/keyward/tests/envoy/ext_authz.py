"""Envoy's ext_authz over gRPC, as a gateway calls it: a client generated
(with grpcio-tools) from Envoy's own protos under proto/, sending each case
read from stdin as a CheckRequest to keyward's --grpc-listen.

Usage: python ext_authz.py HOST:PORT PROTO_DIR < cases.json > answers.json
A case: {"method", "path", "headers": {name: value}, "source": "ip"}.
An answer: {"grpc": code, "status": http status, "headers": {...}, "body": str}.
"""

import json
import os
import sys
import tempfile

import grpc
import grpc_tools
from grpc_tools import protoc


def compile_protos(proto_dir, out):
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = [
        os.path.relpath(os.path.join(root, f), proto_dir)
        for root, _, names in os.walk(proto_dir)
        for f in names
        if f.endswith(".proto")
    ]
    args = ["protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + files) != 0:
        sys.exit("protoc failed")
    # Namespace packages (no __init__.py): `google` joins protobuf's own.
    sys.path.insert(0, out)


def main():
    target, proto_dir = sys.argv[1], sys.argv[2]
    out = tempfile.mkdtemp(prefix="keyward-envoy-")
    compile_protos(proto_dir, out)
    from envoy.config.core.v3 import address_pb2
    from envoy.service.auth.v3 import attribute_context_pb2 as ctx
    from envoy.service.auth.v3 import external_auth_pb2 as pb
    from envoy.service.auth.v3 import external_auth_pb2_grpc as rpc

    cases = json.load(sys.stdin)
    answers = []
    with grpc.insecure_channel(target) as channel:
        stub = rpc.AuthorizationStub(channel)
        for case in cases:
            if case.get("bare"):
                # No attributes at all: a gRPC error, not an HTTP answer.
                try:
                    stub.Check(pb.CheckRequest(), timeout=10)
                    answers.append({"grpc": 0})
                except grpc.RpcError as e:
                    answers.append({"grpc": e.code().value[0], "details": e.details()})
                continue
            source = ctx.AttributeContext.Peer(
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address=case.get("source", "127.0.0.1"), port_value=40000)
                )
            )
            http = ctx.AttributeContext.HttpRequest(
                method=case["method"], path=case["path"], host="api.example.com", headers=case.get("headers", {})
            )
            request = pb.CheckRequest(
                attributes=ctx.AttributeContext(source=source, request=ctx.AttributeContext.Request(http=http))
            )
            response = stub.Check(request, timeout=10)
            kind = response.WhichOneof("http_response")
            if kind == "ok_response":
                headers = {o.header.key: o.header.value for o in response.ok_response.headers}
                answers.append({"grpc": response.status.code, "status": 200, "headers": headers, "body": ""})
            else:
                denied = response.denied_response
                headers = {o.header.key: o.header.value for o in denied.headers}
                answers.append(
                    {"grpc": response.status.code, "status": denied.status.code, "headers": headers, "body": denied.body}
                )
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
