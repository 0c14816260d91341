"""Runs the GDN documentation's own stream examples against gdn-local.

Usage: seed_examples.py SCENARIO      (SCENARIO: one of SCENARIOS below; --list prints them)

Each example's code block is read at run time from the documentation pages in the seeds
directory (GDN_SEEDS, default ../shared/seeds beside the repository). Only the host and the
credentials are replaced, each by an exact-text substitution that must match (a changed page
fails loudly instead of running something else). Where a snippet cannot run as printed (a
top-level `await` in CommonJS) it is wrapped in an async function; its logic is not edited.
Then the example runs with a time limit and the result is checked: its exit status and output,
and what gdn-local holds afterwards, read back with pyC8 (a reader from the earliest message,
or a consumer that must stay quiet).

Environment (set by interop/run): GDN_PORT, GDN_API_KEY (a key of its own per scenario, so each
scenario has its own tenant), GDN_EMAIL, GDN_PASSWORD, GDN_WORK (a scratch directory),
NODE_PATH (jsc8), REQUESTS_CA_BUNDLE, WEBSOCKET_CLIENT_CA_BUNDLE, NODE_EXTRA_CA_CERTS.
"""

import base64
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import websocket
from c8 import C8Client

HERE = Path(__file__).resolve().parent
PORT = os.environ.get("GDN_PORT", "")
PY_HOST = "127.0.0.1:%s/api-" % PORT  # pyC8 prefixes "api-" and adds ":443"
JS_URL = "https://gdn@127.0.0.1:%s" % PORT  # jsc8 rewrites it to https://api-gdn@...

# Distinguishing text of each documentation page (the file names are content hashes).
PAGE_PUBLISH = "title: Publish Messages to Streams"
PAGE_QUICKSTART_SDK = "## Full demo quickstart file"  # the quickstart with API-key examples
PAGE_QUICKSTART_DRIVERS = "# Quickstart with Streams"  # the one with email/password examples
PAGE_EXCLUSIVE = "title: Exclusive Subscription Example"


def log(*args):
    print(*args, flush=True)


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)
    log("ok:", what)


# ---------------------------------------------------------------------------------------------
# Reading the examples out of the pages


def seeds_dir():
    default = HERE.parent.parent / "shared" / "seeds"
    d = Path(os.environ.get("GDN_SEEDS") or default)
    if not d.is_dir():
        raise Failed("no documentation pages at %s (set GDN_SEEDS)" % d)
    return d


def page(marker):
    """The one page whose text contains `marker` (a line of it)."""
    found = [
        p
        for p in sorted(seeds_dir().glob("*.txt"))
        if marker in p.read_text(encoding="utf-8").splitlines()
    ]
    if len(found) != 1:
        raise Failed("expected one page with %r, found %d" % (marker, len(found)))
    return found[0]


def code_blocks(path):
    """(section heading, tab value, code) for every fenced block of a markdown page."""
    heading, tab, fence, blocks = None, None, None, []
    for line in path.read_text(encoding="utf-8").splitlines():
        if fence is not None:
            if line.strip() == "```":
                blocks.append((heading, tab, textwrap.dedent("\n".join(fence)) + "\n"))
                fence = None
            else:
                fence.append(line)
        elif line.startswith("```"):
            fence = []
        elif line.startswith("## "):
            heading, tab = line[3:].strip(), None
        elif re.match(r"\s*<TabItem value=\"", line):
            tab = re.match(r"\s*<TabItem value=\"([^\"]+)\"", line).group(1)
        elif re.match(r"\s*</TabItem>", line):
            tab = None
    if fence is not None:
        raise Failed("%s: unterminated code block" % path.name)
    return blocks


def snippet(marker, heading, tab):
    """The code block of page `marker` under section `heading`, in tab `tab` (exactly one)."""
    path = page(marker)
    found = [code for h, t, code in code_blocks(path) if h == heading and t == tab]
    if len(found) != 1:
        raise Failed("%s: expected one %r block under %r, found %d" % (path.name, tab, heading, len(found)))
    log("example: %s, section %r, tab %r (%d lines)" % (path.name, heading, tab, found[0].count("\n")))
    return found[0]


def substitute(code, *pairs):
    """Replaces each exact text; a text that is not in the code is an error."""
    for old, new in pairs:
        if old not in code:
            raise Failed("the example no longer contains %r" % old)
        code = code.replace(old, new)
    return code


def wrap_async(code):
    """Lets a CommonJS snippet with a top-level `await` run: the same code in an async function."""
    return "(async () => {\n%s\n})().catch((e) => { console.error(e); process.exit(1); });\n" % code


def write(name, code):
    # Under GDN_WORK: JavaScript finds jsc8 through NODE_PATH.
    path = Path(os.environ["GDN_WORK"]) / "seeds" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(code, encoding="utf-8")
    return path


def api_key():
    return os.environ["GDN_API_KEY"]


# ---------------------------------------------------------------------------------------------
# Running them


class Proc:
    """An example running in its own process group, its output collected line by line."""

    live = []

    def __init__(self, name, argv, stdin_text=""):
        self.name = name
        self.lines = []
        self.cond = threading.Condition()
        log("start %s: %s" % (name, " ".join(str(a) for a in argv)))
        self.p = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        Proc.live.append(self)
        self.p.stdin.write(stdin_text)
        self.p.stdin.close()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.p.stdout:
            line = line.rstrip("\n")
            print("  [%s] %s" % (self.name, line), flush=True)
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)  # end of output
            self.cond.notify_all()

    def matching(self, pattern):
        with self.cond:
            return [l for l in self.lines if l is not None and re.search(pattern, l)]

    def wait_for(self, pattern, count=1, timeout=20):
        """Waits until `count` output lines match `pattern`; returns them."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                hits = [l for l in self.lines if l is not None and re.search(pattern, l)]
                if len(hits) >= count:
                    return hits
                left = deadline - time.monotonic()
                if left <= 0 or (self.lines and self.lines[-1] is None):
                    raise Failed("%s: %d line(s) matching %r (saw %d)" % (self.name, count, pattern, len(hits)))
                self.cond.wait(left)

    def finish(self, timeout=30):
        """Waits for the exit (and the end of its output); returns the exit status."""
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Failed("%s did not finish within %d s" % (self.name, timeout))
        with self.cond:
            self.cond.wait_for(lambda: self.lines and self.lines[-1] is None, 5)
        log("%s exited with %d" % (self.name, rc))
        return rc

    def stop(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
                self.p.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait()

    @classmethod
    def stop_all(cls):
        for proc in cls.live:
            proc.stop()


def python(name, code, stdin_text=""):
    return Proc(name, [sys.executable, "-u", write(name + ".py", code)], stdin_text)


def node(name, code):
    return Proc(name, ["node", write(name + ".js", code)])


# ---------------------------------------------------------------------------------------------
# Looking at the server afterwards, with pyC8


def client(email=False):
    if email:
        return C8Client(
            protocol="https",
            host=PY_HOST,
            port=443,
            email=os.environ["GDN_EMAIL"],
            password=os.environ["GDN_PASSWORD"],
            geofabric="_system",
        )
    return C8Client(protocol="https", host=PY_HOST, port=443, apikey=api_key(), geofabric="_system")


def stream_contents(c, stream, local=False, quiet=1.0):
    """Every message of a stream, decoded, read from the earliest one until `quiet` s of silence."""
    reader = c.create_stream_reader(stream, start_message_id="earliest", local=local)
    out = []
    reader.settimeout(quiet)
    try:
        while True:
            msg = json.loads(reader.recv())
            out.append(base64.b64decode(msg["payload"]).decode("utf-8"))
    except websocket.WebSocketTimeoutException:
        pass
    finally:
        reader.close()
    return out


def subscription_is_drained(c, stream, subscription, local=False):
    """True when a consumer of the subscription gets nothing: everything was acknowledged."""
    consumer = c.subscribe(stream, local=local, subscription_name=subscription)
    consumer.settimeout(1.0)
    try:
        frame = consumer.recv()
        log("still pending on %s: %s" % (subscription, frame))
        return False
    except websocket.WebSocketTimeoutException:
        return True
    finally:
        consumer.close()


def inner_payloads(lines):
    """The pyC8 examples base64 a JSON text {"payload": base64(text)} that pyC8 encodes again;
    their subscribers print the outer decoding. Returns the inner texts."""
    out = []
    for line in lines:
        m = re.search(r'"payload": "([A-Za-z0-9+/=]+)"', line)
        out.append(base64.b64decode(m.group(1)).decode("utf-8") if m else None)
    return out


# ---------------------------------------------------------------------------------------------
# The scenarios


def py_publish_000():
    """Publish Messages to Streams, Python SDK: an input() loop that publishes each line until
    '0'. The page assumes the stream exists, so it is created first. Passes when the example
    exits 0 and the stream holds exactly the typed lines."""
    code = substitute(
        snippet(PAGE_PUBLISH, None, "py"),
        ('URL = "play.paas.macrometa.io"', 'URL = "%s"' % PY_HOST),
        ('API_KEY = "xxxxxx"', 'API_KEY = "%s"' % api_key()),
    )
    c = client()
    c.create_stream("streamQuickstart", local=False)
    typed = ["first message", "second message, with {json-ish} text"]
    proc = python("publish-000", code, "\n".join(typed + ["0"]) + "\n")
    check(proc.finish(30) == 0, "the example exits 0")
    check(stream_contents(c, "streamQuickstart") == typed, "the stream holds exactly the typed lines")


def py_quickstart_001():
    """Quickstart, "Full demo quickstart file" (API key): asks 'r' (read) or 'w' (write). One run
    reads (it creates the stream), then one writes 10 messages. Passes when both exit 0, the
    reader printed the 10 messages in order and acknowledged them all."""
    code = substitute(
        snippet(PAGE_QUICKSTART_SDK, "Full demo quickstart file", "py"),
        ('URL = "gdn.paas.macrometa.io"', 'URL = "%s"' % PY_HOST),
        ('API_KEY = "my API key"', 'API_KEY = "%s"' % api_key()),
    )
    reader = python("quickstart-001-read", code, "r\n")
    reader.wait_for(r"In  0$")  # printed once subscribed (after the input prompt)
    check(reader.matching(r"NEW Producer = c8globals\.streamQuickstart"), "the first run creates the stream")
    writer = python("quickstart-001-write", code, "w\n")
    check(writer.finish(30) == 0, "the writer exits 0")
    check(writer.matching(r"^Stream already exists$"), "the second run finds the stream")
    check(reader.finish(30) == 0, "the reader exits 0 after 10 messages")
    got = inner_payloads(reader.matching(r"^Received message "))
    check(got == ["Persistent Hello from (%d)" % i for i in range(10)], "the reader printed the 10 messages in order")
    check(subscription_is_drained(client(), "streamQuickstart", "test-subscription-1"), "all 10 were acknowledged")


def py_quickstart_002():
    """Quickstart with Streams (email and password): the create-streams, subscribe and publish
    examples. Passes when each exits 0, both streams exist, and the subscriber printed the 10
    published messages in order."""
    subs = (
        ("host='gdn.paas.macrometa.io'", "host='%s'" % PY_HOST),
        ("email='nemo@nautilus.com'", "email='%s'" % os.environ["GDN_EMAIL"]),
        ("password='xxxxx'", "password='%s'" % os.environ["GDN_PASSWORD"]),
    )
    create = substitute(snippet(PAGE_QUICKSTART_DRIVERS, "Create Global & Local Streams", "py"), *subs)
    subscribe = substitute(snippet(PAGE_QUICKSTART_DRIVERS, "Subscribe to Stream", "py"), *subs)
    publish = substitute(snippet(PAGE_QUICKSTART_DRIVERS, "Publish Messages", "py"), *subs)
    creator = python("quickstart-002-create", create)
    check(creator.finish(30) == 0, "the create example exits 0")
    check(creator.matching(r"'stream-id': 'c8globals\.demostream'"), "it created c8globals.demostream")
    check(creator.matching(r"'stream-id': 'c8locals\.demostream'"), "it created c8locals.demostream")
    subscriber = python("quickstart-002-subscribe", subscribe)
    subscriber.wait_for(r"^In  0$")
    publisher = python("quickstart-002-publish", publish)
    check(publisher.finish(30) == 0, "the publish example exits 0")
    check(subscriber.finish(30) == 0, "the subscribe example exits 0 after 10 messages")
    got = inner_payloads(subscriber.matching(r"^Received message "))
    check(got == ["Persistent: Hello from (%d)" % i for i in range(10)], "the subscriber printed the 10 messages in order")
    c = client(email=True)
    check(c.has_stream("demostream", local=False) and c.has_stream("demostream", local=True), "both streams exist for the user's tenant")


def js_publish_001():
    """Quickstart, "Publish Messages", JavaScript (login): createStream + publishMessage. Runs
    wrapped in an async function (top-level await). The example catches its own errors, so it
    passes when it exits 0, printed no error, and c8locals.my-stream holds "Hello World"."""
    code = substitute(
        snippet(PAGE_QUICKSTART_SDK, "Publish Messages", "js"),
        ('new jsc8("https://gdn.paas.macrometa.io")', "new jsc8(%s)" % json.dumps(JS_URL)),
        (
            'client.login("nemo@nautilus.com", "xxxxxx")',
            "client.login(%s, %s)" % (json.dumps(os.environ["GDN_EMAIL"]), json.dumps(os.environ["GDN_PASSWORD"])),
        ),
    )
    proc = node("publish-001", wrap_async(code))
    check(proc.finish(30) == 0, "the example exits 0")
    check(not proc.matching(r"could not be done"), "it printed no error")
    check(stream_contents(client(email=True), "my-stream", local=True) == ["Hello World"], "c8locals.my-stream holds \"Hello World\"")


def js_subscribe_001():
    """Quickstart, "Subscribe to Stream", JavaScript (login): listUserFabrics, createStream and
    a createStreamReader consumer that prints each payload (base64) and acknowledges it. Runs
    wrapped in an async function (top-level await) after a one-line prelude that defines the
    `geo_fabric` it uses but never defines. It runs until stopped. Messages are published (pyC8)
    until the consumer prints one, then one more; passes when it prints that one, and once
    stopped, its subscription has nothing left unacknowledged."""
    code = substitute(
        snippet(PAGE_QUICKSTART_SDK, "Subscribe to Stream", "js"),
        ('new jsc8("https://gdn.paas.macrometa.io")', "new jsc8(%s)" % json.dumps(JS_URL)),
        (
            'client.login("nemo@nautilus.com", "xxxxxx")',
            "client.login(%s, %s)" % (json.dumps(os.environ["GDN_EMAIL"]), json.dumps(os.environ["GDN_PASSWORD"])),
        ),
    )
    proc = node("subscribe-001", 'const geo_fabric = "_system";\n' + wrap_async(code))
    proc.wait_for(r"^dcList:  \[ 'local' \]$")
    c = client(email=True)
    deadline = time.monotonic() + 20
    while not (c.has_stream("my-stream", local=True) or time.monotonic() > deadline):
        time.sleep(0.1)
    producer = c.create_stream_producer("my-stream", local=True)
    try:
        # A new subscription starts at the end of the stream: probe until the consumer is on.
        n = 0
        while not proc.matching(r"^[A-Za-z0-9+/=]{8,}$"):
            if time.monotonic() > deadline or proc.p.poll() is not None:
                raise Failed("the consumer printed no message")
            producer.send("probe %d" % n)
            n += 1
            time.sleep(0.2)
        log("ok: the consumer is on after %d probe(s)" % n)
        producer.send("Hello from the check")
    finally:
        producer.close()
    want = base64.b64encode(b"Hello from the check").decode()
    proc.wait_for("^%s$" % re.escape(want), timeout=10)
    log("ok: the consumer printed the message's payload")
    time.sleep(0.5)  # its acknowledgement follows the print
    proc.stop()
    check(subscription_is_drained(c, "my-stream", "my-subscription", local=True), "it acknowledged every message")


def js_publish_000():
    """Publish Messages to Streams, JavaScript SDK: createStreamProducer, 10 messages once the
    socket opens. It never closes the socket, so it runs until stopped; the page assumes the
    stream exists, so it is created first. Passes when within 20 s the stream holds the 10
    messages in order (the example is then stopped)."""
    code = substitute(
        snippet(PAGE_PUBLISH, None, "js"),
        ('url: "https://play.paas.macrometa.io"', "url: %s" % json.dumps(JS_URL)),
        ('apiKey: "XXXXX"', "apiKey: %s" % json.dumps(api_key())),
    )
    c = client()
    c.create_stream("streamQuickstart", local=False)
    proc = node("publish-000", code)
    proc.wait_for(r"^Stream: Persistent hello from \(9\)$")
    want = ["Persistent hello from (%d)" % i for i in range(10)]
    deadline = time.monotonic() + 20
    while stream_contents(c, "streamQuickstart", quiet=0.3) != want:
        if time.monotonic() > deadline or proc.p.poll() is not None:
            raise Failed("the stream does not hold the 10 messages")
        time.sleep(0.2)
    log("ok: the stream holds the 10 messages in order")
    check(proc.p.poll() is None, "the example is still running (it never closes its producer)")


def js_exclusive_004():
    """Exclusive Subscription Example: producer.js, consumer-1.js, consumer-2.js, all with an API
    key. Their createStream() is not awaited, so their sockets may arrive before the stream
    exists (on GDN too): the stream is created first. The producer and consumer 1 run until
    stopped. Passes when consumer 1 prints 3 of the producer's messages, consumer 2 (same
    subscription) is refused with 409 while consumer 1 is connected -- Exclusive semantics; the
    page's claim that both consumers get messages is wrong -- and consumer 1 keeps receiving."""
    subs = (
        ('const BASE_URL = "https://play.paas.macrometa.io/"', "const BASE_URL = %s" % json.dumps(JS_URL + "/")),
        ('apiKey: "xxxxxx"', "apiKey: %s" % json.dumps(api_key())),
    )
    producer = substitute(snippet(PAGE_EXCLUSIVE, "Producer Example", "js"), *subs)
    consumer1 = substitute(snippet(PAGE_EXCLUSIVE, "Create Consumer 1", "javascript"), *subs)
    consumer2 = substitute(snippet(PAGE_EXCLUSIVE, "Create Consumer 2", "javascript"), *subs)
    client().create_stream("streamQuickstart", local=False)
    message = r"^Hello Macrometa Stream! Here is your random message number \d+$"
    first = node("exclusive-004-consumer-1", consumer1)
    first.wait_for(r"This stream already exists!")
    prod = node("exclusive-004-producer", producer)
    first.wait_for(message, 3, timeout=20)
    log("ok: consumer 1 receives the producer's messages")
    second = node("exclusive-004-consumer-2", consumer2)
    check(second.finish(20) != 0, "consumer 2 stops")
    check(second.matching(r"Unexpected server response: 409"), "consumer 2 was refused with 409")
    seen = len(first.matching(message))
    first.wait_for(message, seen + 1, timeout=10)
    log("ok: consumer 1 keeps receiving")
    check(prod.p.poll() is None and first.p.poll() is None, "producer and consumer 1 still run")


SCENARIOS = {
    "py-publish-000": py_publish_000,
    "py-quickstart-001": py_quickstart_001,
    "py-quickstart-002": py_quickstart_002,
    "js-publish-000": js_publish_000,
    "js-publish-001": js_publish_001,
    "js-subscribe-001": js_subscribe_001,
    "js-exclusive-004": js_exclusive_004,
}


def main():
    if sys.argv[1:] == ["--list"]:
        print("\n".join(SCENARIOS))
        return 0
    if len(sys.argv) != 2 or sys.argv[1] not in SCENARIOS:
        sys.exit("usage: seed_examples.py --list | " + "|".join(SCENARIOS))
    # interop/run's `timeout` sends SIGTERM: stop the examples too (they run in their own
    # process groups, some forever).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        SCENARIOS[sys.argv[1]]()
        log("%s: all checks passed" % sys.argv[1])
        return 0
    except Failed as e:
        log("FAILED: %s" % e)
        return 1
    finally:
        Proc.stop_all()


if __name__ == "__main__":
    sys.exit(main())
