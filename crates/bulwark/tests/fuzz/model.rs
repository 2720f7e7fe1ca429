//! Sending a request (reqwest, or hand-written HTTP/1.1 over TCP), and the model of what the
//! node accepted that its state is compared with.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Answer, Http, Req, Resp, ACCOUNT_POOL};

/// Sends with reqwest when it can represent the request, else over raw TCP.
pub async fn send(
    client: &reqwest::Client,
    port: u16,
    req: &Req,
) -> Result<Option<Answer>, String> {
    if req.raw {
        return send_raw(port, req).await;
    }
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).map_err(|e| e.to_string())?;
    let target = std::str::from_utf8(&req.target).map_err(|e| e.to_string())?;
    let mut builder = client
        .request(method, format!("http://127.0.0.1:{port}{target}"))
        .body(req.body.clone());
    for (name, value) in &req.headers {
        builder = builder.header(name.as_str(), value.as_slice());
    }
    let response = match builder.send().await {
        Ok(response) => response,
        // The node answered (a 404, a 401) and closed before it read the whole body, as it
        // may: that answer is read over raw TCP.
        // That second attempt's answer is marked: the first may have been applied.
        Err(e) if format!("{e:?}").contains("BodyWrite") => {
            let answer = send_raw(port, req).await?;
            return Ok(answer.map(|a| Answer { resent: true, ..a }));
        }
        Err(e) => return Err(format!("{e:?}")),
    };
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| format!("{e:?}"))?;
    Ok(Some(Answer {
        status,
        body: body.to_vec(),
        resent: false,
    }))
}

/// Whether reqwest can send this request as it is (else it goes over raw TCP).
pub fn representable(req: &Req) -> bool {
    let header_ok = req.headers.iter().all(|(n, v)| {
        reqwest::header::HeaderName::from_bytes(n.as_bytes()).is_ok()
            && reqwest::header::HeaderValue::from_bytes(v).is_ok()
    });
    let target_ok = std::str::from_utf8(&req.target).is_ok_and(|t| {
        t.starts_with('/')
            && t.bytes().all(|b| b.is_ascii_graphic())
            && reqwest::Url::parse(&format!("http://127.0.0.1:1{t}")).is_ok()
    });
    header_ok && target_ok && reqwest::Method::from_bytes(req.method.as_bytes()).is_ok()
}

/// One request on its own connection, `connection: close`, read to the end. `Ok(None)`: the
/// node closed the connection without an answer.
async fn send_raw(port: u16, req: &Req) -> Result<Option<Answer>, String> {
    let mut wire = Vec::new();
    wire.extend_from_slice(req.method.as_bytes());
    wire.push(b' ');
    wire.extend_from_slice(&req.target);
    wire.extend_from_slice(b" HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n");
    for (name, value) in &req.headers {
        wire.extend_from_slice(name.as_bytes());
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(value);
        wire.extend_from_slice(b"\r\n");
    }
    let length = req.content_length.unwrap_or(req.body.len());
    wire.extend_from_slice(format!("content-length: {length}\r\n\r\n").as_bytes());
    wire.extend_from_slice(&req.body);
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // The node may answer (413, 431, 404) and close before it read everything.
    let cut_short = stream.write_all(&wire).await.is_err();
    // A body shorter than its content-length keeps the node waiting for the rest.
    let patience = if req.malformed.is_some() { 2 } else { 30 };
    let mut bytes = Vec::new();
    let read = stream.read_to_end(&mut bytes);
    let reset = match tokio::time::timeout(Duration::from_secs(patience), read).await {
        Err(_) if req.malformed.is_some() => return Ok(None),
        Err(_) => return Err(format!("no answer within {patience} s")),
        Ok(read) => read.is_err(),
    };
    if !bytes.is_empty() {
        return parse_answer(&bytes).map(Some);
    }
    // A connection closed with a body unread is reset, and the kernel drops the answer that
    // came before the reset; only then, or for broken framing, may an answer be missing.
    let unread_body = !req.body.is_empty() && (cut_short || reset);
    if req.malformed.is_some() || unread_body {
        Ok(None)
    } else {
        Err("the connection closed without an answer".into())
    }
}

/// The status and body of a raw HTTP/1.1 answer (chunked or not).
fn parse_answer(bytes: &[u8]) -> Result<Answer, String> {
    let text = String::from_utf8_lossy(bytes);
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {text:?}"))?;
    let head = String::from_utf8_lossy(&bytes[..split]).to_lowercase();
    let status = head
        .strip_prefix("http/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let raw_body = &bytes[split + 4..];
    // `100 Continue` (asked for with `expect`) comes before the answer.
    if (100..200).contains(&status) {
        return parse_answer(raw_body);
    }
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(raw_body)
    } else {
        raw_body.to_vec()
    };
    Ok(Answer {
        status,
        body,
        resent: false,
    })
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || raw.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[(eol + 4 + size).min(raw.len())..];
    }
    out
}

/// What the node accepted: accounts and transfers as it answered them right after the write
/// that changed them, and tokens by id.
#[derive(Default)]
pub struct Model {
    pub accounts: BTreeMap<u64, Value>,
    pub transfers: BTreeMap<u64, Value>,
    pub tokens: BTreeMap<String, (String, String)>,
    /// Accounts a pending transfer with a timeout touched: their pending balances change when
    /// it expires, with no request at all.
    pub expiring: BTreeSet<u64>,
}

impl Model {
    pub fn objects(&self) -> usize {
        self.accounts.len() + self.transfers.len()
    }

    /// Ids of pending transfers accepted, which valid batches post and void.
    pub fn pending(&self) -> Vec<u64> {
        let is_pending = |t: &Value| {
            t["flags"]
                .as_array()
                .is_some_and(|f| f.contains(&"pending".into()))
        };
        self.transfers
            .iter()
            .filter(|(_, t)| is_pending(t))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The account as compared: pending balances left out while an expiry may move them.
    pub fn comparable_account(&self, id: u64, mut a: Value) -> Value {
        if self.expiring.contains(&id) {
            if let Some(map) = a.as_object_mut() {
                map.remove("debits_pending");
                map.remove("credits_pending");
            }
        }
        a
    }
}

/// The transfer as compared: its pending status moves when it is posted, voided or expires,
/// and a history page adds the account's balances.
pub fn comparable_transfer(mut t: Value) -> Value {
    if let Some(map) = t.as_object_mut() {
        map.remove("pending_status");
        map.remove("balances");
    }
    t
}

/// A GET by the checker (the tests' admin token, its own rate bucket): retried while the node
/// answers 429 or 503.
pub async fn checked_get(http: &Http, path: &str) -> Resp {
    for _ in 0..200 {
        let r = http.get(path).await;
        if r.status != 429 && r.status != 503 {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("GET {path}: still 429 or 503 after 10 s");
}

/// Account ids whose existence the checker looks at: the pool, every accepted one, and ids at
/// the edges.
pub fn checked_accounts(model: &Model) -> BTreeSet<u64> {
    let mut ids: BTreeSet<u64> = (1..=ACCOUNT_POOL + 1).collect();
    ids.extend(model.accounts.keys().copied());
    ids.extend([u64::MAX, u64::MAX - 1, 1 << 32, 99_999_999]);
    ids
}
