"""The stream flow of the official Python SDK, pyC8 1.1.2, against gdn-local.

Usage: sdk_flow.py apikey|email

Settings come from the environment that interop/run sets: GDN_PORT, GDN_API_KEY, GDN_EMAIL,
GDN_PASSWORD, and REQUESTS_CA_BUNDLE / WEBSOCKET_CLIENT_CA_BUNDLE (gdn-local's certificate).
Every check raises on a mismatch, so a zero exit status means the whole flow worked; every
socket read has a timeout, so a missing message fails instead of hanging.
"""

import base64
import json
import os
import sys

import websocket
from c8 import C8Client
from c8.exceptions import StreamCreateError, StreamSubscriberError

RECV_TIMEOUT = 10  # seconds to wait for a message that must come
QUIET_TIMEOUT = 1  # seconds of silence that show a message does not come


def log(*args):
    print(*args, flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    log("ok:", what)


def connect(mode):
    """A client the way the documentation builds one, with only the host and credentials changed."""
    host = "127.0.0.1:%s/api-" % os.environ["GDN_PORT"]
    if mode == "apikey":
        key = os.environ["GDN_API_KEY"]
        client = C8Client(
            protocol="https", host=host, port=443, apikey=key, geofabric="_system"
        )
        # GDN's rule, which gdn-local follows: the key without its last two dot-separated parts.
        tenant = key.rsplit(".", 2)[0]
    else:
        email = os.environ["GDN_EMAIL"]
        client = C8Client(
            protocol="https",
            host=host,
            port=443,
            email=email,
            password=os.environ["GDN_PASSWORD"],
            geofabric="_system",
        )
        tenant = email.replace("@", "_")
    return client, tenant


def recv_json(sock, timeout=RECV_TIMEOUT):
    sock.settimeout(timeout)
    return json.loads(sock.recv())


def nothing_arrives(sock):
    sock.settimeout(QUIET_TIMEOUT)
    try:
        frame = sock.recv()
    except websocket.WebSocketTimeoutException:
        return True
    log("unexpected frame:", frame)
    return False


def decoded(msg):
    return base64.b64decode(msg["payload"]).decode("utf-8")


def stream_flow(client, tenant, local):
    kind = "local" if local else "global"
    name = "pyc8_flow_%s" % kind
    full = ("c8locals." if local else "c8globals.") + name
    sub = "pyc8-flow-sub"

    check(not client.has_stream(name, local=local), "%s: %s does not exist yet" % (kind, name))
    created = client.create_stream(name, local=local)
    check(created == {"stream-id": full}, "%s: create_stream answers %r" % (kind, created))
    check(client.has_stream(name, local=local), "%s: has_stream sees it" % kind)
    listed = [s for s in client.get_streams() if s["topic"] == full]
    check(
        len(listed) == 1 and listed[0]["tenant"] == tenant and listed[0]["local"] == local,
        "%s: get_streams lists it for tenant %s" % (kind, tenant),
    )
    try:
        client.create_stream(name, local=local)
        raise AssertionError("a second create_stream should fail")
    except StreamCreateError as e:
        check(e.http_code == 409 and e.error_code == 581, "%s: a second create gets 409/581" % kind)

    # Subscribe first: a new subscription starts at the end of the stream.
    consumer = client.subscribe(name, local=local, subscription_name=sub)
    producer = client.create_stream_producer(name, local=local)
    payloads = [
        "hello from pyC8",
        json.dumps({"nested": "json", "n": 1, "quote": "\"'"}),
        "x" * 70000,  # more than one 64 KiB read on every layer
    ]
    for p in payloads:
        producer.send(p)  # pyC8 base64-encodes and wraps in {"payload": ...}
    got = [recv_json(consumer) for _ in payloads]
    check([decoded(m) for m in got] == payloads, "%s: payloads round-trip in order" % kind)
    check(all(m["redeliveryCount"] == 0 for m in got), "%s: first deliveries" % kind)
    check(len({m["messageId"] for m in got}) == 3, "%s: distinct message ids" % kind)
    # Acknowledge the first two only, the way the documentation does it.
    for m in got[:2]:
        consumer.send(json.dumps({"messageId": m["messageId"]}))
    consumer.close()

    # The unacknowledged third comes again to the next consumer of the subscription; the
    # acknowledged ones do not.
    consumer = client.subscribe(name, local=local, subscription_name=sub)
    again = recv_json(consumer)
    check(
        again["messageId"] == got[2]["messageId"] and decoded(again) == payloads[2],
        "%s: the unacknowledged message is delivered again, only it" % kind,
    )
    consumer.send(json.dumps({"messageId": again["messageId"]}))
    producer.send("after the reconnect")
    m = recv_json(consumer)
    check(decoded(m) == "after the reconnect", "%s: a new message follows" % kind)
    consumer.send(json.dumps({"messageId": m["messageId"]}))
    consumer.close()

    consumer = client.subscribe(name, local=local, subscription_name=sub)
    check(nothing_arrives(consumer), "%s: everything acknowledged stays acknowledged" % kind)
    consumer.close()

    # A reader from the start sees the whole stream, whatever the subscriptions did.
    reader = client.create_stream_reader(name, start_message_id="earliest", local=local)
    seen = [decoded(recv_json(reader)) for _ in range(4)]
    check(seen == payloads + ["after the reconnect"], "%s: a reader from earliest sees all 4" % kind)
    reader.close()
    producer.close()

    check(client.delete_stream(full) is True, "%s: delete_stream" % kind)
    check(not client.has_stream(name, local=local), "%s: gone from the list" % kind)
    try:
        client.subscribe(name, local=local, subscription_name=sub)
        raise AssertionError("subscribing to a deleted stream should fail")
    except StreamSubscriberError:
        log("ok: %s: pyC8 refuses to subscribe to the deleted stream" % kind)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode not in ("apikey", "email"):
        sys.exit("usage: sdk_flow.py apikey|email")
    client, tenant = connect(mode)
    check(client._fabric.tenant_name == tenant, "%s login: tenant is %s" % (mode, tenant))
    fabrics = client.get_fabric_details()
    check(fabrics[0]["name"] == "_system", "get_fabric_details names _system")
    for local in (False, True):
        stream_flow(client, tenant, local)
    log("pyC8 %s flow: all checks passed" % mode)


if __name__ == "__main__":
    main()
