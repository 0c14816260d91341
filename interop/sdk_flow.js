// The stream flow of the official JavaScript SDK, jsc8 1.1.0, against gdn-local.
//
// Usage: node sdk_flow.js apikey|login|otp|publish
//
//   apikey   an API-key client: create a global and a local stream, subscribe with
//            createStreamReader, produce with createStreamProducer (both fetch their OTP and the
//            data-center host themselves), receive, acknowledge, redelivery, delete
//   login    the same with client.login(email, password)
//   otp      stream.getOtp() and stream.producer()/consumer() with ?otp= on an explicit DC host;
//            an OTP works once; a socket without one is refused (401)
//   publish  stream.publishMessage() (REST publish) reaches a consumer byte for byte
//
// Settings come from the environment interop/run sets: GDN_PORT, GDN_API_KEY, GDN_EMAIL,
// GDN_PASSWORD, NODE_EXTRA_CA_CERTS (gdn-local's certificate). Every wait is bounded; any
// failed check exits non-zero.
"use strict";

const jsc8 = require("jsc8");

const PORT = process.env.GDN_PORT;
const URL = `https://gdn@127.0.0.1:${PORT}`; // jsc8 turns it into https://api-gdn@127.0.0.1:PORT
const DC_HOST = `gdn@127.0.0.1:${PORT}`; // what stream.producer()/consumer() prefix with api-
const RECV_TIMEOUT_MS = 10000;
const QUIET_MS = 1000;

function log(...args) {
  console.log(...args);
}

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  log("ok:", what);
}

const b64 = (text) => Buffer.from(text, "utf8").toString("base64");
const unb64 = (text) => Buffer.from(text, "base64").toString("utf8");

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// A jsc8 socket (a raw `ws` WebSocket) with its frames queued, so a test can wait for the
// next one with a timeout.
class Socket {
  constructor(ws, name) {
    this.ws = ws;
    this.name = name;
    this.frames = [];
    this.waiters = [];
    this.closed = new Promise((resolve) => ws.on("close", resolve));
    ws.on("message", (data) => {
      const frame = JSON.parse(String(data));
      const waiter = this.waiters.shift();
      if (waiter) waiter(frame);
      else this.frames.push(frame);
    });
  }

  // Resolves when open; rejects with the HTTP status if the upgrade is refused.
  opened() {
    const ws = this.ws;
    const open = new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("unexpected-response", (_req, res) => {
        reject(Object.assign(new Error(`${this.name}: HTTP ${res.statusCode}`), { status: res.statusCode }));
      });
      ws.once("error", reject);
    });
    return withTimeout(open, RECV_TIMEOUT_MS, `${this.name} opens`);
  }

  next(ms = RECV_TIMEOUT_MS) {
    if (this.frames.length) return Promise.resolve(this.frames.shift());
    const frame = new Promise((resolve) => this.waiters.push(resolve));
    return withTimeout(frame, ms, `${this.name}: next frame`);
  }

  async nothingWithin(ms) {
    try {
      const frame = await this.next(ms);
      log("unexpected frame:", frame);
      return false;
    } catch (e) {
      this.waiters.length = 0;
      return true;
    }
  }

  send(obj) {
    this.ws.send(JSON.stringify(obj));
  }

  async close() {
    this.ws.close();
    await withTimeout(this.closed, RECV_TIMEOUT_MS, `${this.name} closes`);
  }
}

async function open(wsPromise, name) {
  const s = new Socket(await wsPromise, name);
  await s.opened();
  return s;
}

async function connect(mode) {
  if (mode === "login") {
    const client = new jsc8({ url: URL, fabricName: "_system" });
    const reply = await client.login(process.env.GDN_EMAIL, process.env.GDN_PASSWORD);
    const tenant = process.env.GDN_EMAIL.replace("@", "_");
    check(reply.tenant === tenant, `login answers tenant ${tenant}`);
    return { client, tenant };
  }
  const key = process.env.GDN_API_KEY;
  const client = new jsc8({ url: URL, apiKey: key, fabricName: "_system" });
  // jsc8 derives the tenant from the key's text: without its last two dot-separated parts.
  return { client, tenant: key.split(".").slice(0, -2).join(".") };
}

async function rejection(promise) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  return null;
}

// createStream, createStreamReader/createStreamProducer, acks and redelivery, deleteStream.
async function sdkFlow(client, tenant, local) {
  const kind = local ? "local" : "global";
  const name = `jsc8_flow_${kind}`;
  const full = `${local ? "c8locals" : "c8globals"}.${name}`;
  const sub = "jsc8-flow-sub";

  check(client._connection.getTenantName() === tenant, `${kind}: client tenant is ${tenant}`);
  check(!(await client.hasStream(name, local)), `${kind}: ${name} does not exist yet`);
  const created = await client.createStream(name, local);
  check(created.result["stream-id"] === full, `${kind}: createStream answers ${full}`);
  check(await client.hasStream(name, local), `${kind}: hasStream sees it`);
  const again = await rejection(client.createStream(name, local));
  check(again && again.statusCode === 409 && again.errorNum === 581, `${kind}: a second create gets 409/581`);

  let consumer = await open(client.createStreamReader(name, sub, local), "consumer");
  const producer = await open(client.createStreamProducer(name, local), "producer");
  const payloads = ["hello from jsc8", JSON.stringify({ nested: "json", quote: "\"'" }), "ünïcødé ✓", "y".repeat(70000)];
  for (const p of payloads) producer.send({ payload: b64(p) });
  const acks = [];
  for (const _ of payloads) acks.push(await producer.next());
  check(acks.every((a) => a.result === "ok" && a.messageId), `${kind}: the producer gets an ack per message`);
  const got = [];
  for (const _ of payloads) got.push(await consumer.next());
  check(JSON.stringify(got.map((m) => unb64(m.payload))) === JSON.stringify(payloads), `${kind}: payloads round-trip in order`);
  check(JSON.stringify(got.map((m) => m.messageId)) === JSON.stringify(acks.map((a) => a.messageId)), `${kind}: consumer ids are the producer's ack ids`);
  // Acknowledge all but the last, then leave.
  for (const m of got.slice(0, -1)) consumer.send({ messageId: m.messageId });
  await consumer.close();

  consumer = await open(client.createStreamReader(name, sub, local), "consumer 2");
  const redelivered = await consumer.next();
  const last = got[got.length - 1];
  check(redelivered.messageId === last.messageId && unb64(redelivered.payload) === payloads[payloads.length - 1], `${kind}: only the unacknowledged message comes again`);
  consumer.send({ messageId: redelivered.messageId });
  producer.send({ payload: b64("after the reconnect") });
  const m = await consumer.next();
  check(unb64(m.payload) === "after the reconnect", `${kind}: a new message follows`);
  consumer.send({ messageId: m.messageId });
  await consumer.close();

  consumer = await open(client.createStreamReader(name, sub, local), "consumer 3");
  check(await consumer.nothingWithin(QUIET_MS), `${kind}: everything acknowledged stays acknowledged`);
  await consumer.close();
  await producer.close();

  const deleted = await client.deleteStream(full);
  check(deleted && deleted.error === false, `${kind}: deleteStream`);
  check(!(await client.hasStream(name, local)), `${kind}: gone from the list`);
}

// stream.getOtp() and the sockets of stream.producer()/consumer() on an explicit DC host.
async function otpFlow(client) {
  const name = "jsc8_otp";
  const stream = client.stream(name, false);
  await stream.createStream();
  const consumerOtp = await stream.getOtp();
  check(typeof consumerOtp === "string" && consumerOtp.length > 0, "getOtp returns a password");
  const consumer = await open(stream.consumer("jsc8-otp-sub", DC_HOST, { otp: consumerOtp }), "otp consumer");
  const producer = await open(stream.producer(DC_HOST, { otp: await stream.getOtp() }), "otp producer");
  producer.send({ payload: b64("sent with an OTP") });
  const ack = await producer.next();
  const m = await consumer.next();
  check(ack.result === "ok" && m.messageId === ack.messageId && unb64(m.payload) === "sent with an OTP", "a message goes through OTP sockets");
  consumer.send({ messageId: m.messageId });

  // The same OTP a second time, and no OTP at all (as some documentation examples do): 401.
  const reused = await rejection(open(stream.producer(DC_HOST, { otp: consumerOtp }), "reused-otp producer"));
  check(reused && reused.status === 401, "an OTP works only once (401 the second time)");
  const none = await rejection(open(stream.producer(DC_HOST), "no-otp producer"));
  check(none && none.status === 401, "a socket without an OTP is refused (401)");
  // The documentation's exclusive example passes the host with a trailing slash: //_ws/...
  const slashed = await open(stream.producer(`${DC_HOST}/`, { otp: await stream.getOtp() }), "trailing-slash producer");
  slashed.send({ payload: b64("via //_ws") });
  check((await slashed.next()).result === "ok", "a DC host with a trailing slash works");
  const m2 = await consumer.next();
  check(unb64(m2.payload) === "via //_ws", "and its message arrives");
  consumer.send({ messageId: m2.messageId });
  for (const s of [consumer, producer, slashed]) await s.close();
  await client.deleteStream(stream.topic);
}

// stream.publishMessage(): GDN's REST publish; a consumer gets exactly the body text.
async function publishFlow(client) {
  const name = "jsc8_publish";
  await client.createStream(name, true);
  const stream = client.getStream(name, true);
  const consumer = await open(client.createStreamReader(name, "jsc8-publish-sub", true), "consumer");
  const texts = ["Hello World", '{"looks": "like json"}'];
  for (const t of texts) {
    const reply = await stream.publishMessage(t);
    check(reply && reply.error === false, `publishMessage(${JSON.stringify(t)}) succeeds`);
  }
  for (const t of texts) {
    const m = await consumer.next();
    check(unb64(m.payload) === t, `the consumer receives ${JSON.stringify(t)} byte for byte`);
    consumer.send({ messageId: m.messageId });
  }
  await consumer.close();
  await client.deleteStream(stream.topic);
}

async function main() {
  const mode = process.argv[2];
  if (!["apikey", "login", "otp", "publish"].includes(mode)) {
    throw new Error("usage: node sdk_flow.js apikey|login|otp|publish");
  }
  const { client, tenant } = await connect(mode === "login" ? "login" : "apikey");
  if (mode === "apikey" || mode === "login") {
    const fabric = await client.get();
    check(fabric.name === "_system", "client.get() describes _system");
    for (const local of [false, true]) await sdkFlow(client, tenant, local);
  } else if (mode === "otp") {
    await otpFlow(client);
  } else {
    await publishFlow(client);
  }
  log(`jsc8 ${mode} flow: all checks passed`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e && e.stack ? e.stack : e);
    process.exit(1);
  }
);
