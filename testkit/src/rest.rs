//! The GDN REST endpoints the documentation's examples and the official SDKs call: login,
//! tenant lookup, one-time passwords, the local data center, fabrics and streams.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use serde_json::{json, Value};

use super::auth::DEFAULT_TENANT;
use super::broker::State;
use super::http::{Request, Response};
use super::wire::{self, NewMessage, Query};
use super::Shared;

/// GDN's error number for "stream already exists".
const STREAM_EXISTS: u32 = 581;
/// The error number this server uses for "no such stream".
const STREAM_NOT_FOUND: u32 = 1203;
/// The error number this server uses for failed authentication.
const UNAUTHORIZED: u32 = 401;

/// The request path with repeated slashes collapsed and a first segment starting with `api-`
/// dropped (pyC8 sends `/api-:443/_fabric/...` when pointed at `127.0.0.1:<port>/api-`).
pub(crate) fn normalize_path(path: &str) -> String {
    let mut segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.first().is_some_and(|s| s.starts_with("api-")) {
        segments.remove(0);
    }
    let mut out = String::with_capacity(path.len());
    for s in segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Answers one REST call.
pub(crate) fn handle(shared: &Shared, req: &Request) -> Response {
    shared.counters.rest.fetch_add(1, Ordering::Relaxed);
    let mut st = shared.lock();
    if st.rest_fail_left > 0 {
        st.rest_fail_left -= 1;
        let status = st.rest_fail_status;
        return Response::error(
            status,
            u32::from(status),
            "injected by LocalServer::fail_rest_next",
        );
    }
    let (path, query) = match req.target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req.target.as_str(), None),
    };
    let query = match Query::parse(query) {
        Ok(q) => q,
        Err(r) => return Response::error(400, 400, &r.body),
    };
    let path = normalize_path(path);
    let segments: Vec<String> = path
        .split('/')
        .skip(1)
        .map(|s| wire::percent_decode(s, false).unwrap_or_else(|| s.to_string()))
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let call = Call {
        shared,
        req,
        query: &query,
    };
    match (req.method.as_str(), segments.as_slice()) {
        ("POST", ["_open", "auth"]) => call.login(&mut st),
        ("POST", ["_api", "key", "validate"]) => call.validate(&st),
        _ => {
            let Some(tenant) = call.tenant(&st) else {
                return Response::error(
                    401,
                    UNAUTHORIZED,
                    "not authorized to execute this request",
                );
            };
            call.route(&mut st, &tenant, &segments)
        }
    }
}

/// One request and what it needs from the server.
struct Call<'a> {
    shared: &'a Shared,
    req: &'a Request,
    query: &'a Query,
}

impl Call<'_> {
    /// The caller's tenant from its `Authorization` header; an open server lets anonymous
    /// callers in as tenant `_mm`.
    fn tenant(&self, st: &State) -> Option<String> {
        let creds = &self.shared.config.credentials;
        match self.req.header("authorization") {
            Some(value) => creds.tenant_of_header(value, &st.sessions),
            None => creds.is_open().then(|| DEFAULT_TENANT.to_string()),
        }
    }

    fn body_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.req.body).ok()
    }

    /// `POST /_open/auth` with `{"email","password"}` or `{"tenant","username","password"}`.
    fn login(&self, st: &mut State) -> Response {
        let body = self.body_json().unwrap_or(Value::Null);
        let field = |name: &str| body.get(name).and_then(Value::as_str);
        let (Some(email), Some(password)) =
            (field("email").or(field("username")), field("password"))
        else {
            return Response::error(400, 400, "expected {\"email\", \"password\"}");
        };
        let config = &self.shared.config;
        let Some(mut tenant) = config.credentials.login(email, password) else {
            return Response::error(401, UNAUTHORIZED, "wrong credentials");
        };
        if let (Some(t), true) = (field("tenant"), config.credentials.is_open()) {
            tenant = t.to_string();
        }
        let nonce = super::random_token(st.otps.len() as u64);
        let jwt = st
            .sessions
            .issue(&tenant, email, config.jwt_lifetime, &nonce);
        Response::json(
            200,
            json!({"jwt": jwt, "tenant": tenant, "username": "root"}),
        )
    }

    /// `POST /_api/key/validate` with `{"apikey"}` or `{"jwt"}`.
    fn validate(&self, st: &State) -> Response {
        let body = self.body_json().unwrap_or(Value::Null);
        let header = match (
            body.get("apikey").and_then(Value::as_str),
            body.get("jwt").and_then(Value::as_str),
        ) {
            (Some(key), _) => format!("apikey {key}"),
            (None, Some(jwt)) => format!("bearer {jwt}"),
            (None, None) => return Response::error(400, 400, "expected {\"apikey\"} or {\"jwt\"}"),
        };
        match self
            .shared
            .config
            .credentials
            .tenant_of_header(&header, &st.sessions)
        {
            Some(tenant) => Response::result(json!({"tenant": tenant, "user": "root"})),
            None => Response::error(401, UNAUTHORIZED, "invalid credentials"),
        }
    }

    fn route(&self, st: &mut State, tenant: &str, segments: &[&str]) -> Response {
        match (self.req.method.as_str(), segments) {
            ("GET", ["_api", "user"]) => Response::result(json!([{
                "user": "root",
                "tenant": tenant,
                "active": true,
                "extra": {},
            }])),
            ("POST", ["apid", "otp"]) => {
                let otp = super::new_otp(st);
                // Good only for the topics of the caller's tenant, if its credentials name one.
                let creds = &self.shared.config.credentials;
                let caller = self.req.header("authorization");
                let caller = caller.and_then(|v| creds.caller_of_header(v, &st.sessions));
                if let Some(c) = caller.filter(|c| c.confined) {
                    st.otps.bind(&otp, &c.tenant);
                }
                Response::json(200, json!({ "otp": otp }))
            }
            ("GET", ["datacenter", "local"]) => Response::json(200, self.datacenter()),
            ("GET", ["datacenter", "all"]) => Response::json(200, json!([self.datacenter()])),
            (_, ["_fabric", fabric, "_api", rest @ ..]) | (_, ["_fabric", fabric, rest @ ..]) => {
                self.fabric(st, tenant, fabric, rest)
            }
            _ => Response::error(404, 404, "unknown path"),
        }
    }

    /// The one data center: `tags.url` is `gdn@127.0.0.1:<port>`, so that SDKs that prefix
    /// `api-` reach this server with `api-gdn` as URL user-info.
    fn datacenter(&self) -> Value {
        let host = format!("gdn@{}", self.shared.addr);
        json!({
            "_key": "local",
            "name": "local",
            "host": self.shared.addr.ip().to_string(),
            "local": true,
            "status": 0,
            "spot_region": false,
            "tags": {"url": host, "api": format!("api-{host}")},
            "locationInfo": {"city": "localhost", "countrycode": "", "countryname": "", "latitude": 0, "longitude": 0, "url": host},
        })
    }

    fn fabric(&self, st: &mut State, tenant: &str, fabric: &str, rest: &[&str]) -> Response {
        let method = self.req.method.as_str();
        match (method, rest) {
            ("GET", ["database", "user"]) => Response::result(json!([fabric_info(fabric)])),
            ("GET", ["database", "current"]) => Response::result(fabric_info(fabric)),
            ("GET", ["streams"]) => match self.global() {
                Ok(global) => Response::result(list_streams(st, tenant, fabric, global)),
                Err(r) => r,
            },
            ("POST", ["streams", name]) => self.create(st, tenant, fabric, name),
            ("DELETE", ["streams", name]) => self.delete(st, tenant, fabric, name),
            ("POST", ["streams", name, "publish"]) => self.publish(st, tenant, fabric, name),
            _ => Response::error(404, 404, "unknown path"),
        }
    }

    /// `?global=true|True|1|false|False|0`, absent = `None`.
    fn global(&self) -> Result<Option<bool>, Response> {
        match self.query.get("global") {
            None | Some("") => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(Some(false)),
            Some(_) => Err(Response::error(400, 400, "global must be true or false")),
        }
    }

    fn create(&self, st: &mut State, tenant: &str, fabric: &str, name: &str) -> Response {
        let global = match self.global() {
            Ok(g) => g.unwrap_or(false),
            Err(r) => return r,
        };
        if name.is_empty() || name.contains(['/', '%']) || name.chars().any(char::is_control) {
            return Response::error(400, 400, "invalid stream name");
        }
        let full = stream_topic(tenant, fabric, name, global);
        if st.topics.contains_key(&full) {
            return Response::error(409, STREAM_EXISTS, "stream already exists");
        }
        st.topic(&full);
        Response::result(json!({ "stream-id": short_name(name, global) }))
    }

    /// The full topic of a stream named `c8globals.x` / `c8locals.x`, or bare with `?global=`.
    fn named(&self, tenant: &str, fabric: &str, name: &str) -> Result<String, Response> {
        if let Some(bare) = name.strip_prefix("c8globals.") {
            return Ok(stream_topic(tenant, fabric, bare, true));
        }
        if let Some(bare) = name.strip_prefix("c8locals.") {
            return Ok(stream_topic(tenant, fabric, bare, false));
        }
        let global = self.global()?.unwrap_or(true);
        Ok(stream_topic(tenant, fabric, name, global))
    }

    fn delete(&self, st: &mut State, tenant: &str, fabric: &str, name: &str) -> Response {
        let full = match self.named(tenant, fabric, name) {
            Ok(f) => f,
            Err(r) => return r,
        };
        if st.topics.remove(&full).is_none() {
            return Response::error(404, STREAM_NOT_FOUND, "stream not found");
        }
        Response::result(json!(true))
    }

    fn publish(&self, st: &mut State, tenant: &str, fabric: &str, name: &str) -> Response {
        let full = match self.named(tenant, fabric, name) {
            Ok(f) => f,
            Err(r) => return r,
        };
        if !st.topics.contains_key(&full) && !self.shared.config.auto_create {
            return Response::error(404, STREAM_NOT_FOUND, "stream not found");
        }
        let id = st.topic(&full).append(NewMessage {
            payload: Bytes::copy_from_slice(&self.req.body),
            properties: BTreeMap::new(),
            key: None,
            context: None,
            event_time: None,
        });
        self.shared.counters.stored.fetch_add(1, Ordering::Relaxed);
        Response::result(json!({ "messageId": id }))
    }
}

fn fabric_info(fabric: &str) -> Value {
    json!({
        "name": fabric,
        "id": "1",
        "path": "",
        "isSystem": fabric == "_system",
        "options": {"dcList": "local", "realTime": false, "spotDc": ""},
    })
}

/// `global` or `local`, as GDN's namespace and topic prefixes spell the scope.
fn scope(global: bool) -> &'static str {
    if global {
        "global"
    } else {
        "local"
    }
}

/// `c8globals.x` or `c8locals.x`.
fn short_name(name: &str, global: bool) -> String {
    format!("c8{}s.{name}", scope(global))
}

/// The namespace of a fabric's global or local streams: `c8global.f` or `c8local.f`.
fn namespace(fabric: &str, global: bool) -> String {
    format!("c8{}.{fabric}", scope(global))
}

/// The full topic of a GDN stream, as the WebSocket paths name it.
fn stream_topic(tenant: &str, fabric: &str, name: &str, global: bool) -> String {
    format!(
        "persistent://{tenant}/{}/{}",
        namespace(fabric, global),
        short_name(name, global)
    )
}

fn list_streams(st: &State, tenant: &str, fabric: &str, global: Option<bool>) -> Value {
    let (global_ns, local_ns) = (namespace(fabric, true), namespace(fabric, false));
    let mut out: Vec<Value> = st
        .topics
        .keys()
        .filter_map(|full| {
            let rest = full.strip_prefix("persistent://")?;
            let mut parts = rest.splitn(3, '/');
            let (t, ns, topic) = (parts.next()?, parts.next()?, parts.next()?);
            if t != tenant {
                return None;
            }
            let is_global = if ns == global_ns {
                true
            } else if ns == local_ns {
                false
            } else {
                return None;
            };
            if global.is_some_and(|g| g != is_global) {
                return None;
            }
            Some(json!({
                "topic": topic,
                "local": !is_global,
                "db": fabric,
                "tenant": tenant,
                "type": 4,
            }))
        })
        .collect();
    out.sort_by(|a, b| a["topic"].as_str().cmp(&b["topic"].as_str()));
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_as_the_sdks_need() {
        assert_eq!(
            normalize_path("/api-:443/_fabric/_system/_api/streams"),
            "/_fabric/_system/_api/streams"
        );
        assert_eq!(
            normalize_path("//_ws/ws/v2/producer"),
            "/_ws/ws/v2/producer"
        );
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(normalize_path("/_api/user"), "/_api/user");
    }

    #[test]
    fn stream_names() {
        assert_eq!(
            stream_topic("t", "_system", "orders", true),
            "persistent://t/c8global._system/c8globals.orders"
        );
        assert_eq!(
            stream_topic("t", "f", "x", false),
            "persistent://t/c8local.f/c8locals.x"
        );
    }
}
