#!/usr/bin/env python3
"""boto3's `apigatewaymanagementapi` client against Signalbox's `/@connections` API.

Run by tests/it/apigw.rs. The calls are the ones our users make, unchanged but for
`endpoint_url`: `post_to_connection`, `get_connection`, `delete_connection`. A few more
operations sign a request with botocore's own SigV4 signer and then break it (a tampered
body, the signature replayed on another path, a date 20 minutes old) to check that the
server refuses them.

One call:
    python3 boto3_driver.py --endpoint URL --key AKID --secret S OP CONNECTION_ID \
        [OTHER_ID] [--data TEXT | --data-hex HEX]
Many calls, one process (one JSON object per line on the file or `-` for stdin; each
answer is printed and flushed before the next line is read, so a caller may interleave):
    python3 boto3_driver.py --endpoint URL --key AKID --secret S --ops-file -
    {"op": "post", "id": "conn_…", "data": "text"}        # or "data_hex": "ff00"
    {"op": "get", "id": "conn_…", "endpoint": "http://…/prod", "secret": "other"}
    {"op": "flood", "id": "conn_…", "size": 65536, "count": 400}

OPs and what each prints (one JSON line, exit status 0 either way):
    post | get | delete          {"ok": true, "result": {...}} or
                                 {"ok": false, "error": {"code", "status", "message"}}
    flood                        `post` of `size` bytes up to `count` times, stopping at
                                 the first error: {"ok": …, "posted": N, "error"?: …}
    tampered-body | replay-path OTHER_ID | expired | signed-path PATH
                                 {"status": 403, "headers": {...}, "body": ...}
"""

import argparse
import datetime
import json
import os
import sys
import traceback

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

import boto3  # noqa: E402
import botocore.auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402
from botocore.httpsession import URLLib3Session  # noqa: E402

_clients = {}


def client(endpoint, key, secret, region):
    """boto3.client('apigatewaymanagementapi', …) exactly as a backend creates it, with
    retries off so that a 429 or 503 is seen once."""
    cache_key = (endpoint, key, secret, region)
    if cache_key not in _clients:
        _clients[cache_key] = boto3.client(
            "apigatewaymanagementapi",
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
        )
    return _clients[cache_key]


def iso(value):
    return value.isoformat() if isinstance(value, datetime.datetime) else value


def body_of(op):
    if op.get("data_hex") is not None:
        return bytes.fromhex(op["data_hex"])
    if op.get("data") is not None:
        return op["data"].encode("utf-8")
    return b""


def client_error(e):
    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        return {
            "code": err.get("Code"),
            "status": e.response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
            "message": err.get("Message"),
        }
    return {"code": type(e).__name__, "status": None, "message": str(e)}


def sdk_call(op, c):
    name, conn = op["op"], op["id"]
    try:
        if name == "post":
            r = c.post_to_connection(ConnectionId=conn, Data=body_of(op))
            return {"ok": True, "result": {"status": r["ResponseMetadata"]["HTTPStatusCode"]}}
        if name == "get":
            r = c.get_connection(ConnectionId=conn)
            identity = r.get("Identity", {})
            return {
                "ok": True,
                "result": {
                    "status": r["ResponseMetadata"]["HTTPStatusCode"],
                    "connectedAt": iso(r.get("ConnectedAt")),
                    "lastActiveAt": iso(r.get("LastActiveAt")),
                    "identity": {"sourceIp": identity.get("SourceIp"), "userAgent": identity.get("UserAgent")},
                },
            }
        if name == "delete":
            r = c.delete_connection(ConnectionId=conn)
            return {"ok": True, "result": {"status": r["ResponseMetadata"]["HTTPStatusCode"]}}
    except Exception as e:  # noqa: BLE001 — every failure is reported, as JSON
        return {"ok": False, "error": client_error(e)}
    raise ValueError(f"unknown op {name}")


def flood(op, c):
    data = b"x" * int(op.get("size", 65536))
    posted = 0
    for _ in range(int(op.get("count", 100))):
        try:
            c.post_to_connection(ConnectionId=op["id"], Data=data)
        except Exception as e:  # noqa: BLE001
            return {"ok": False, "posted": posted, "error": client_error(e)}
        posted += 1
    return {"ok": True, "posted": posted}


def connection_path(endpoint, conn):
    """The path boto3 itself would use: the endpoint's path, then /@connections/{id} with
    the id percent-encoded as botocore encodes URI labels."""
    from botocore.utils import percent_encode

    return endpoint.rstrip("/") + "/@connections/" + percent_encode(conn)


def send_raw(request):
    response = URLLib3Session().send(request.prepare())
    text = response.content.decode("utf-8", "replace")
    try:
        body = json.loads(text) if text else ""
    except ValueError:
        body = text
    return {"status": response.status_code, "headers": {k.lower(): v for k, v in response.headers.items()}, "body": body}


def signed_post(url, body, key, secret, region):
    request = AWSRequest(method="POST", url=url, data=body)
    botocore.auth.SigV4Auth(Credentials(key, secret), "execute-api", region).add_auth(request)
    return request


def attack(op, endpoint, key, secret, region):
    name, conn = op["op"], op["id"]
    body = body_of(op) or b"signed body"
    if name == "tampered-body":
        # Signed for `body`, then one byte changed (same length), headers untouched.
        request = signed_post(connection_path(endpoint, conn), body, key, secret, region)
        request.data = body[:-1] + (b"X" if body[-1:] != b"X" else b"Y")
        return send_raw(request)
    if name == "replay-path":
        # A valid signature for a POST to `id`, sent as is to `other`'s path.
        request = signed_post(connection_path(endpoint, conn), body, key, secret, region)
        request.url = connection_path(endpoint, op["other"])
        return send_raw(request)
    if name == "expired":
        # Signed by a client whose clock is 20 minutes behind (SigV4 allows 15).
        real = botocore.auth.get_current_datetime
        botocore.auth.get_current_datetime = lambda: real() - datetime.timedelta(minutes=20)
        try:
            request = signed_post(connection_path(endpoint, conn), body, key, secret, region)
        finally:
            botocore.auth.get_current_datetime = real
        return send_raw(request)
    if name == "signed-path":
        # A correctly signed POST to a path given as sent (e.g. an id with `_` as `%5F`),
        # to check the server verifies the signature against the path exactly as sent.
        return send_raw(signed_post(endpoint.rstrip("/") + op["path"], body, key, secret, region))
    raise ValueError(f"unknown op {name}")


def run(op, defaults):
    endpoint = op.get("endpoint", defaults.endpoint)
    key = op.get("key", defaults.key)
    secret = op.get("secret", defaults.secret)
    region = op.get("region", defaults.region)
    name = op["op"]
    if name in ("post", "get", "delete"):
        return sdk_call(op, client(endpoint, key, secret, region))
    if name == "flood":
        return flood(op, client(endpoint, key, secret, region))
    return attack(op, endpoint, key, secret, region)


def emit(value):
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--ops-file", help="JSON lines of ops; - for stdin")
    parser.add_argument("--data")
    parser.add_argument("--data-hex")
    parser.add_argument("op", nargs="?")
    parser.add_argument("id", nargs="?")
    parser.add_argument("other", nargs="?")
    args = parser.parse_args()

    if args.ops_file is None:
        if not args.op or args.id is None:
            parser.error("OP and CONNECTION_ID are required without --ops-file")
        op = {"op": args.op, "id": args.id, "data": args.data, "data_hex": args.data_hex}
        if args.op == "replay-path":
            op["other"] = args.other
        if args.op == "signed-path":
            op["path"] = args.id
        emit(run(op, args))
        return

    source = sys.stdin if args.ops_file == "-" else open(args.ops_file, encoding="utf-8")
    while True:
        line = source.readline()
        if not line:
            break
        if not line.strip():
            continue
        try:
            emit(run(json.loads(line), args))
        except Exception as e:  # noqa: BLE001 — a bad op line is the caller's bug
            emit({"driver_error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(), "line": line})


if __name__ == "__main__":
    main()
