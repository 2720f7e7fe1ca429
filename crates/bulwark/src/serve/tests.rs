use super::*;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A listener whose first `failures` accepts fail as a process out of descriptors sees it.
struct OutOfFds {
    inner: TcpListener,
    failures: usize,
}

impl Listener for OutOfFds {
    async fn accept(&mut self) -> io::Result<TcpStream> {
        if self.failures > 0 {
            self.failures -= 1;
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        Listener::accept(&mut self.inner).await
    }
}

fn app() -> axum::Router {
    axum::Router::new().route("/", axum::routing::get(|| async { "ok" }))
}

fn options(max_connections: usize) -> ServeOptions {
    ServeOptions {
        header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        max_connections,
        tls: None,
    }
}

async fn get(addr: std::net::SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn accept_errors_are_retried_not_fatal() {
    let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = OutOfFds { inner, failures: 5 };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, app(), options(4), async {
        let _ = stopped.await;
    }));
    let answer = tokio::time::timeout(Duration::from_secs(10), get(addr))
        .await
        .expect("served after the accept errors");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!server.is_finished());
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("stops on shutdown")
        .unwrap();
}

#[test]
fn accept_errors_are_logged_at_most_once_a_second() {
    let mut errors = AcceptErrors::default();
    let t0 = Instant::now();
    assert!(errors.should_log(t0));
    assert!(!errors.should_log(t0 + Duration::from_millis(500)));
    assert!(!errors.should_log(t0 + Duration::from_millis(999)));
    assert_eq!(errors.take_suppressed(), 2);
    assert!(errors.should_log(t0 + ACCEPT_ERROR_LOG_EVERY));
}

#[tokio::test]
async fn a_connection_past_the_limit_is_answered_503() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, app(), options(1), std::future::pending()));
    let _held = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = get(addr).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.ends_with(r#""error":"overloaded","message":"too many client connections are open; retry in a second"}"#));
}

#[test]
fn test_overrides_only_lower_the_bounds() {
    assert_eq!(lowered_by_env("BULWARK_TEST_UNSET_VARIABLE", 10), 10);
    std::env::set_var("BULWARK_TEST_SERVE_TESTS_HIGH", "1000");
    assert_eq!(lowered_by_env("BULWARK_TEST_SERVE_TESTS_HIGH", 10), 10);
    std::env::set_var("BULWARK_TEST_SERVE_TESTS_LOW", "3");
    assert_eq!(lowered_by_env("BULWARK_TEST_SERVE_TESTS_LOW", 10), 3);
}
