//! A scripted OpenAI-compatible model on loopback, so the real gateway runs offline.
//!
//! Serves `POST /v1/chat/completions` (streamed as SSE, or plain JSON) and
//! `GET /v1/models`. A user message holding `OCG-TOOL <tool> <json-args>` makes the
//! model call that tool once; every other request gets a short final text. OpenClaw
//! appends an internal user message after each tool result, so the script keys on the
//! message holding the directive and calls at most one tool after it: answering "the
//! last message is a tool result" would loop forever.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use anyhow::Context as _;
use serde_json::{json, Value};

/// What the test writes in a user message to make the model call a tool.
pub(crate) const DIRECTIVE: &str = "OCG-TOOL";
/// The model's final answer when it calls no tool.
pub(crate) const FINAL_TEXT: &str = "done";

/// One tool call the model made, with the result the gateway sent back for it.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    pub(crate) id: String,
    pub(crate) tool: String,
    pub(crate) args: Value,
    /// The tool result's text, once a later request carried it.
    pub(crate) result: Option<String>,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    /// Results whose call id this model did not issue (should not happen).
    stray_results: HashMap<String, String>,
    /// The `tools` array of the latest request that had one.
    tools: Vec<Value>,
}

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The running model server; stops when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct Model(Arc<Handle>);

struct Handle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    netns: Option<String>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let addr = self.addr;
        match &self.netns {
            None => drop(TcpStream::connect(addr)),
            Some(ns) => drop(crate::support::in_netns(ns, move || {
                TcpStream::connect(addr).map(drop)
            })),
        }
    }
}

impl Model {
    /// Listens on 127.0.0.1 at a free port.
    pub(crate) fn start() -> anyhow::Result<Self> {
        Self::start_in(None)
    }

    /// Listens on 127.0.0.1 of network namespace `netns` (the gateway's), or of this
    /// process's.
    pub(crate) fn start_in(netns: Option<&str>) -> anyhow::Result<Self> {
        let listener = match netns {
            None => TcpListener::bind("127.0.0.1:0"),
            Some(ns) => crate::support::in_netns(ns, || TcpListener::bind("127.0.0.1:0"))?,
        }
        .context("binding the model's port")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            stop: AtomicBool::new(false),
        });
        let accept_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("ocg-model".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if accept_shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let shared = Arc::clone(&accept_shared);
                    let _ = std::thread::Builder::new()
                        .name("ocg-model-conn".into())
                        .spawn(move || serve(conn, &shared));
                }
            })
            .context("starting the model's thread")?;
        Ok(Self(Arc::new(Handle {
            addr,
            shared,
            netns: netns.map(str::to_owned),
        })))
    }

    /// The provider's `baseUrl` for openclaw.json.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}/v1", self.0.addr)
    }

    /// Every tool call made so far, oldest first.
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.0.shared.lock().calls.clone()
    }

    /// The tool schemas of the latest request (OpenAI `tools` array).
    pub(crate) fn tools(&self) -> Vec<Value> {
        self.0.shared.lock().tools.clone()
    }
}

/// The directive `OCG-TOOL <tool> <json-args>` for a user message.
pub(crate) fn directive(tool: &str, args: &Value) -> String {
    format!("{DIRECTIVE} {tool} {args}")
}

fn serve(conn: TcpStream, shared: &Shared) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut writer = write_half;
    let mut reader = BufReader::new(conn);
    // HTTP/1.1 keep-alive: requests one after the other until the peer closes.
    loop {
        let request = match read_request(&mut reader, shared) {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => break,
        };
        let (status, content_type, body) = respond(&request, shared);
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             Cache-Control: no-cache\r\nConnection: keep-alive\r\n\r\n",
            body.len()
        );
        if writer.write_all(head.as_bytes()).is_err()
            || writer.write_all(body.as_bytes()).is_err()
            || writer.flush().is_err()
        {
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// One request; `None` when the peer closed (or the server stops) between requests.
fn read_request(
    reader: &mut BufReader<TcpStream>,
    shared: &Shared,
) -> anyhow::Result<Option<Request>> {
    let mut line = String::new();
    // Idle keep-alive connection: poll the stop flag on each read timeout.
    loop {
        match reader.read_line(&mut line) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) && line.is_empty() =>
            {
                if shared.stop.load(Ordering::SeqCst) {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut content_length = 0usize;
    let mut chunked = false;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Ok(None);
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "content-length" {
                content_length = value.parse().context("bad Content-Length")?;
            } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let body = if chunked {
        read_chunked(reader)?
    } else {
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body)?;
        body
    };
    Ok(Some(Request { method, path, body }))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let size = size.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size, 16).context("bad chunk size")?;
        if size == 0 {
            // Trailers up to the empty line.
            loop {
                let mut trailer = String::new();
                if reader.read_line(&mut trailer)? == 0 || trailer.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
    }
}

fn respond(request: &Request, shared: &Shared) -> (&'static str, &'static str, String) {
    let path = request.path.split('?').next().unwrap_or_default();
    match (request.method.as_str(), path.trim_end_matches('/')) {
        ("GET", "/v1/models" | "/models") => (
            "200 OK",
            "application/json",
            json!({"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "ocg"}]})
                .to_string(),
        ),
        ("POST", "/v1/chat/completions" | "/chat/completions") => {
            match serde_json::from_slice::<Value>(&request.body) {
                Ok(body) => completion(&body, shared),
                Err(e) => (
                    "400 Bad Request",
                    "application/json",
                    json!({"error": {"message": format!("bad JSON: {e}")}}).to_string(),
                ),
            }
        }
        _ => (
            "404 Not Found",
            "application/json",
            json!({"error": {"message": format!("no route {} {}", request.method, path)}})
                .to_string(),
        ),
    }
}

/// The text of a message's `content`: a string or an array of `{type: text, text}`.
fn text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str).or_else(|| p.as_str()))
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `(tool, args)` of the directive in `message`, if it holds one.
fn parse_directive(message: &str) -> Option<(String, Value)> {
    let rest = &message[message.find(DIRECTIVE)? + DIRECTIVE.len()..];
    let rest = rest.trim_start();
    let name_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let (tool, rest) = rest.split_at(name_end);
    // The arguments are one JSON object; the gateway may append text after it.
    let args = serde_json::Deserializer::from_str(rest.trim_start())
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| json!({}));
    Some((tool.to_owned(), args))
}

/// Call ids compared as OpenClaw rewrites them (alphanumerics only).
fn same_id(a: &str, b: &str) -> bool {
    a.chars()
        .filter(char::is_ascii_alphanumeric)
        .eq(b.chars().filter(char::is_ascii_alphanumeric))
}

/// The scripted decision: a tool call, or `None` for the final text.
fn decide(messages: &[Value], has_tools: bool) -> Option<(String, Value)> {
    if !has_tools {
        return None;
    }
    let (at, directive) = messages.iter().enumerate().rev().find_map(|(i, m)| {
        (m["role"] == "user")
            .then(|| parse_directive(&text(&m["content"])))
            .flatten()
            .map(|d| (i, d))
    })?;
    // One tool call per directive: none yet after the directive's message.
    let called = messages[at + 1..].iter().any(|m| {
        m["role"] == "assistant" && m["tool_calls"].as_array().is_some_and(|c| !c.is_empty())
    });
    (!called).then_some(directive)
}

fn completion(body: &Value, shared: &Shared) -> (&'static str, &'static str, String) {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let tools = body["tools"].as_array().cloned().unwrap_or_default();
    if let Ok(path) = std::env::var("OCG_E2E_MODEL_DUMP") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{body}");
        }
    }
    let call = {
        let mut state = shared.lock();
        if !tools.is_empty() {
            state.tools.clone_from(&tools);
        }
        for m in messages.iter().filter(|m| m["role"] == "tool") {
            let id = m["tool_call_id"].as_str().unwrap_or_default().to_owned();
            let content = text(&m["content"]);
            match state.calls.iter_mut().find(|c| same_id(&c.id, &id)) {
                Some(c) => c.result = Some(content),
                None => {
                    state.stray_results.insert(id, content);
                }
            }
        }
        decide(&messages, !tools.is_empty()).map(|(tool, args)| {
            // Alphanumeric: OpenClaw strips other characters from call ids.
            let id = format!("callocg{}", state.calls.len() + 1);
            state.calls.push(Call {
                id: id.clone(),
                tool: tool.clone(),
                args: args.clone(),
                result: None,
            });
            (id, tool, args)
        })
    };
    let model = body["model"].as_str().unwrap_or("m");
    let (delta, finish) = match &call {
        Some((id, tool, args)) => (
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "index": 0, "id": id, "type": "function",
                "function": {"name": tool, "arguments": args.to_string()}}]}),
            "tool_calls",
        ),
        None => (json!({"role": "assistant", "content": FINAL_TEXT}), "stop"),
    };
    let usage = json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15});
    if body["stream"] != true {
        let mut message = delta;
        if let Some(calls) = message.get_mut("tool_calls").and_then(Value::as_array_mut) {
            for c in calls {
                c.as_object_mut().map(|o| o.remove("index"));
            }
        }
        let reply = json!({"id": "chatcmpl-ocg", "object": "chat.completion", "created": 0,
            "model": model, "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage});
        return ("200 OK", "application/json", reply.to_string());
    }
    let chunk = |choices: Value| {
        json!({"id": "chatcmpl-ocg", "object": "chat.completion.chunk", "created": 0,
            "model": model, "choices": choices})
    };
    let mut sse = String::new();
    let mut push = |v: Value| sse.push_str(&format!("data: {v}\n\n"));
    push(chunk(
        json!([{"index": 0, "delta": delta, "finish_reason": null}]),
    ));
    push(chunk(
        json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
    ));
    let mut last = chunk(json!([]));
    last["usage"] = usage;
    push(last);
    sse.push_str("data: [DONE]\n\n");
    ("200 OK", "text/event-stream", sse)
}
