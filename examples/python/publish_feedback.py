"""Takes one piece of feedback round the loop over NATS JetStream, then follows Closeloop's
outbound feed until all four events of the loop are stored.

Needs nats-py (pip install nats-py). Run: python3 publish_feedback.py [--loop-id ID] [--timeout S]
with NATS_URL set (default nats://127.0.0.1:4222). Prints one JSON line per feed event of the
loop and exits 0, or exits 1 with a message when the timeout passes first.
"""

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from datetime import datetime, timezone

import nats
from nats.js.api import DeliverPolicy
from nats.js.errors import NoStreamResponseError, NotFoundError

NATS_URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
SOURCE = "urn:example:publish-feedback"

# The loop's steps, in order: (type suffix, data).
STEPS = [
    ("feedback.received", {
        "org_unit": "rxx/site-a/ward-7", "channel": "survey",
        "story": "The ward was too noisy at night to sleep.", "ratings": {"fft": 4},
        "themes": ["noise"], "author": {"anonymous": True},
    }),
    ("loop.acknowledged", {"by": "pals-team", "message": "Thank you. We have passed this on."}),
    ("loop.change_made", {"by": "ward-7-manager", "description": "Quiet hours from 23:00."}),
    ("loop.reported_back", {
        "by": "pals-team", "channel": "email",
        "message": "You said the ward was noisy at night. We brought in quiet hours.",
    }),
]


def cloudevent(loop_id, suffix, data):
    # The id comes from the loop and the step: running again with the same --loop-id sends
    # duplicates, which Closeloop recognises and does not store twice.
    return {
        "specversion": "1.0", "id": f"{loop_id}:{suffix}", "source": SOURCE,
        "type": f"org.closeloop.{suffix}", "subject": loop_id,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "datacontenttype": "application/json", "data": data,
    }


async def when_ready(deadline, stream, attempt):
    # Closeloop creates its streams when it starts: until then, wait and try again.
    while True:
        try:
            return await attempt()
        except (NoStreamResponseError, NotFoundError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream {stream} does not exist; is closeloop serve running?")
            await asyncio.sleep(0.5)


async def main(args):
    deadline = time.monotonic() + args.timeout

    async def report(err):
        print(f"NATS: {err}", file=sys.stderr)

    nc = await nats.connect(NATS_URL, connect_timeout=5, max_reconnect_attempts=3,
                            error_cb=report)
    js = nc.jetstream()
    ids = set()
    for suffix, data in STEPS:
        event = cloudevent(args.loop_id, suffix, data)
        payload = json.dumps(event).encode()
        # Nats-Msg-Id lets JetStream drop a re-send within its 2-minute window.
        headers = {"Nats-Msg-Id": event["id"], "Content-Type": "application/cloudevents+json"}
        ack = await when_ready(
            deadline, "FEEDBACK", lambda: js.publish("feedback.fft", payload, headers=headers))
        seen_before = " (a duplicate)" if ack.duplicate else ""
        print(f"published {event['type']}: FEEDBACK #{ack.seq}{seen_before}", file=sys.stderr)
        ids.add(event["id"])

    # An ordered consumer reads the feed from the start, in position order.
    feed = await when_ready(deadline, "CLOSELOOP_EVENTS", lambda: js.subscribe(
        "closeloop.events.>", stream="CLOSELOOP_EVENTS",
        ordered_consumer=True, deliver_policy=DeliverPolicy.ALL))
    positions = set()
    while ids:
        try:
            msg = await feed.next_msg(timeout=max(deadline - time.monotonic(), 0.001))
        except nats.errors.TimeoutError:
            raise TimeoutError(f"{len(ids)} of {len(STEPS)} events of loop {args.loop_id} are not "
                               "on the feed; look for them in GET /v1/dead-letters") from None
        event = json.loads(msg.data)
        # The feed is at least once: skip a position seen before.
        if event["subject"] != args.loop_id or event["position"] in positions:
            continue
        positions.add(event["position"])
        print(json.dumps({"position": event["position"], "type": event["type"],
                          "loop_id": event["subject"]}), flush=True)
        if event["source"] == SOURCE:
            ids.discard(event["id"])
    await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loop-id", default=f"py-{uuid.uuid4()}")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    args = parser.parse_args()
    try:
        asyncio.run(main(args))
    except nats.errors.NoServersError:
        sys.exit(f"cannot connect to NATS at {NATS_URL}; set NATS_URL")
    except TimeoutError as err:
        sys.exit(f"timed out after {args.timeout:g} s: {err}")
