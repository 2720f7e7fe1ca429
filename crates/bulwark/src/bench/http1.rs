//! The benchmark's own HTTP/1.1 client: one keep-alive connection per client, a request
//! written whole in one write, the answer parsed in place (`httparse`). `http://` targets, and
//! `https://` ones with the cluster's CA (a node whose client API serves TLS); answers with a
//! `content-length` (every answer of API v1 has one).

use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// A connection's bytes: in the clear, or inside TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, data),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One keep-alive HTTP/1.1 connection of one client: a request is written whole in one write,
/// and its answer read into a buffer the connection keeps. Client and node share the cores in
/// this benchmark, so every microsecond the client spends per request is taken from the node;
/// reqwest (pool, URL parsing, retry layers, a hop to the connection's task) cost about 22 µs
/// per one-transfer request and hyper's own client about 11 µs, most of it beside the two
/// system calls a request needs.
pub(super) struct Connection {
    stream: Stream,
    /// The answer being read; its body is handed out borrowed.
    answer: Vec<u8>,
    /// The last answer said the node closes the connection after it.
    pub(super) closing: bool,
}

/// Headers an answer may carry; the node sends fewer than ten.
const MAX_ANSWER_HEADERS: usize = 32;

impl Connection {
    pub(super) async fn open(target: &Target) -> Result<Connection, String> {
        let authority = &target.authority;
        let tcp = TcpStream::connect(authority)
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        // One small request at a time per connection: do not let Nagle hold it back.
        tcp.set_nodelay(true)
            .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
        let stream = match &target.tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let host = authority
                    .rsplit_once(':')
                    .map_or(authority.as_str(), |(h, _)| h)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| format!("{host}: {e}"))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {authority}: {e}"))?;
                Stream::Tls(Box::new(tls))
            }
        };
        Ok(Connection {
            stream,
            answer: Vec::with_capacity(4096),
            closing: false,
        })
    }

    /// Writes `request` (a whole HTTP/1.1 request) to the node.
    pub(super) async fn write_request(&mut self, request: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(request)
            .await
            .map_err(|e| format!("request: {e}"))
    }

    /// Reads the answer to the request written last: the status and the body.
    pub(super) async fn read_answer(&mut self) -> Result<(u16, &[u8]), String> {
        self.answer.clear();
        let (status, head, body, close) = loop {
            self.read_more().await?;
            let mut headers = [httparse::EMPTY_HEADER; MAX_ANSWER_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.answer) {
                Ok(httparse::Status::Complete(head)) => {
                    let (body, close) = body_framing(response.headers)?;
                    break (response.code.unwrap_or(0), head, body, close);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(format!("reading the answer: {e}")),
            }
        };
        while self.answer.len() < head + body {
            self.read_more().await?;
        }
        self.closing = close;
        Ok((status, &self.answer[head..head + body]))
    }

    pub(super) async fn read_more(&mut self) -> Result<(), String> {
        if self.answer.capacity() - self.answer.len() < 1024 {
            self.answer.reserve(4096);
        }
        match self.stream.read_buf(&mut self.answer).await {
            Ok(0) => Err("reading the answer: the node closed the connection".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("reading the answer: {e}")),
        }
    }
}

/// The body's length (every answer of the API has a `content-length`) and whether the node
/// closes the connection after it.
fn body_framing(headers: &[httparse::Header<'_>]) -> Result<(usize, bool), String> {
    let mut length = None;
    let mut close = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).unwrap_or("");
            length = Some(
                text.trim()
                    .parse()
                    .map_err(|_| format!("reading the answer: bad content-length {text:?}"))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("reading the answer: a chunked answer is not expected".into());
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let length = length.ok_or("reading the answer: no content-length")?;
    Ok((length, close))
}

/// Where the load goes: the address to connect to, and the request line's target and `Host`.
pub(super) struct Target {
    pub(super) authority: String,
    path: String,
    /// `authorization: Bearer <token>\r\n`, or nothing.
    authorization: String,
    /// `https://`: the TLS configuration trusting the cluster's CA (set by [`Target::with_ca`]).
    tls: Option<Arc<rustls::ClientConfig>>,
    https: bool,
}

impl Target {
    pub(super) fn parse(url: &str) -> Result<Target, String> {
        let (rest, https) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => {
                return Err(format!(
                    "{url}: only http:// and https:// URLs are supported"
                ))
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains(['@', ' ']) {
            return Err(format!("{url}: no host, or one this client cannot take"));
        }
        Ok(Target {
            authority: authority.to_string(),
            path: path.to_string(),
            authorization: String::new(),
            tls: None,
            https,
        })
    }

    /// An `https://` target trusts the CA certificate in `ca` (none: refused); `http://` ignores it.
    pub(super) fn with_ca(mut self, ca: Option<&std::path::Path>) -> Result<Target, String> {
        if !self.https {
            return Ok(self);
        }
        let ca = ca.ok_or("an https:// address needs the cluster's CA certificate: --ca PATH")?;
        let config = bulwark_tls::api_client_config(ca).map_err(|e| format!("--ca: {e}"))?;
        self.tls = Some(config);
        Ok(self)
    }

    /// Every request carries `token`.
    pub(super) fn with_token(mut self, token: Option<&str>) -> Target {
        self.authorization = token
            .map(|t| format!("authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        self
    }

    /// The whole request for `body` into `out`, to be written at once.
    pub(super) fn request(&self, body: &str, out: &mut Vec<u8>) {
        out.clear();
        let _ = write!(
            out,
            "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
             {}content-length: {}\r\n\r\n",
            self.path,
            self.authority,
            self.authorization,
            body.len()
        );
        out.extend_from_slice(body.as_bytes());
    }

    /// A GET of `path` (with its query string) on this target's host, to be written at once.
    pub(super) fn get(&self, path: &str, out: &mut Vec<u8>) {
        out.clear();
        let _ = write!(
            out,
            "GET {path} HTTP/1.1\r\nhost: {}\r\n{}\r\n",
            self.authority, self.authorization
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::send;
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[test]
    fn a_target_is_the_address_and_the_path() {
        let t = Target::parse("http://127.0.0.1:7070/v1/transfers").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1:7070", "/v1/transfers")
        );
        let t = Target::parse("http://localhost:7070").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("localhost:7070", "/")
        );
        let https = Target::parse("https://localhost:7070/v1/transfers").unwrap();
        assert!(https.with_ca(None).is_err(), "https without a CA");
        assert!(Target::parse("ftp://localhost:7070/v1/transfers").is_err());
        assert!(Target::parse("http:///v1/transfers").is_err());
    }

    #[test]
    fn a_request_is_written_whole() {
        let t = Target::parse("http://127.0.0.1:7070/v1/transfers").unwrap();
        let mut out = Vec::new();
        t.request("[1]", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /v1/transfers HTTP/1.1\r\nhost: 127.0.0.1:7070\r\n\
             content-type: application/json\r\ncontent-length: 3\r\n\r\n[1]"
        );
    }

    /// Answers arrive in pieces (the head split, the body after it): each is read whole, and a
    /// `connection: close` makes the next request open a new connection.
    #[tokio::test]
    async fn answers_read_in_pieces_and_a_closing_node_is_reconnected() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let mut accepted = 0;
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                accepted += 1;
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await.unwrap();
                socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-le")
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
                socket
                    .write_all(b"ngth: 5\r\nconnection: close\r\n\r\n")
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
                socket.write_all(b"hello").await.unwrap();
                if accepted == 2 {
                    return accepted;
                }
            }
        });
        let target = Target::parse(&format!("http://{authority}/v1/transfers")).unwrap();
        let mut request = Vec::new();
        target.request("[]", &mut request);
        let mut connection = None;
        for _ in 0..2 {
            let body = send(&mut connection, &target, &request).await.unwrap();
            assert_eq!(body, b"hello");
        }
        assert_eq!(server.await.unwrap(), 2);
    }

    #[test]
    fn an_answer_without_a_length_is_refused() {
        let chunked = [httparse::Header {
            name: "transfer-encoding",
            value: b"chunked",
        }];
        assert!(body_framing(&chunked).is_err());
        assert!(body_framing(&[]).is_err());
        let sized = [httparse::Header {
            name: "Content-Length",
            value: b"12",
        }];
        assert_eq!(body_framing(&sized), Ok((12, false)));
    }
}
