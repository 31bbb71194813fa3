"""A direct producer: XADD a request to inferq's ingress stream, read the result from the reply stream.

Needs only redis-py and a msgpack encoder (msgspec here). Run: ``python examples/producer.py``
with INFERQ_REDIS_URL, INFERQ_KEY_PREFIX and PRODUCER (a name listed in the server's INFERQ_PRODUCERS).
"""

import contextlib
import os

import msgspec
import redis

r = redis.Redis.from_url(os.environ.get("INFERQ_REDIS_URL", "redis://127.0.0.1:6379/0"))
prefix, producer = os.environ.get("INFERQ_KEY_PREFIX", "inferq"), os.environ.get("PRODUCER", "demo")
replies = f"{prefix}:reply:{producer}"
with contextlib.suppress(redis.ResponseError):  # BUSYGROUP: an earlier run created it
    r.xgroup_create(replies, "me", id="$", mkstream=True)  # before the first request: no reply is missed

request = {"kind": "ingress.v1", "model": "iris", "inputs": [[5.1, 3.5, 1.4, 0.2]], "ttl_ms": 30_000}
entry_id = r.xadd(f"{prefix}:ingress:{producer}", {"m": msgspec.msgpack.encode(request)}).decode()
request_id = f"{producer}:{entry_id}"  # inferq's id for it: producer + ingress entry id

while True:
    for _stream, entries in r.xreadgroup("me", "example", {replies: ">"}, count=10, block=30_000) or []:
        for reply_id, fields in entries:
            result = msgspec.msgpack.decode(fields[b"m"])
            r.xack(replies, "me", reply_id)
            if result["id"] == request_id:
                print(msgspec.json.encode(result).decode())
                raise SystemExit(0 if result["status"] == "succeeded" else 1)
