//! A stand-in payment processor for Bulwark's outbox, for tests and demos: it answers the
//! processor protocol (`docs/processor-protocol.md`) the way a real processor must: at most one
//! execution per idempotency key, and no execution at all for a delivery from a term lower than
//! one it has accepted. Knobs make it fail in each of the ways a real one can (unavailable,
//! refusing, slow, losing its answers, down for a while), and every delivery is recorded so a
//! test can check what the relay did.
//!
//! In a test: `let p = start("127.0.0.1:0".parse()?, Config::default()).await?;`, point the
//! relay at `p.url()`, then read `p.records()` and `p.summary()`. From another process, the same
//! through `GET /v1/records` and `GET /v1/summary` (`bulwark processor` runs one).

mod config;
pub mod dec;
mod http;
mod state;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{parse_duration, Config, ControlUpdate, Outage};
pub use state::{Outcome, Payment, Record, Summary, REFUSE_REASON};
pub use wire::{
    BadRequest, PaymentAnswer, PaymentReply, PaymentRequest, BULWARK_TERM, IDEMPOTENCY_KEY,
    PAYMENTS_PATH,
};

use http::Shared;

/// Starts a processor listening on `listen` (port 0 for any free one). It runs until
/// [`ProcessorHandle::shutdown`], or until the handle is dropped (then in the background).
pub async fn start(listen: SocketAddr, config: Config) -> std::io::Result<ProcessorHandle> {
    config.validate().map_err(|b| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: {}", b.field, b.error),
        )
    })?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(state::State::new(config)));
    let router = http::router(shared.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, "payment processor listening");
    Ok(ProcessorHandle {
        addr,
        shared,
        stop: Some(stop),
        task: Some(task),
    })
}

/// A running processor.
pub struct ProcessorHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl ProcessorHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, what a relay is configured with.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_down(&self, down: bool) {
        self.update(|c| c.down = down);
    }

    /// Changes the knobs in place (a new `seed` restarts the random draws from it). Values are
    /// taken as given: a rate outside 0..=1 just saturates.
    pub fn update(&self, f: impl FnOnce(&mut Config)) {
        let mut state = self.shared.lock();
        let mut config = state.config.clone();
        f(&mut config);
        state.set_config(config);
    }

    pub fn config(&self) -> Config {
        self.shared.lock().config.clone()
    }

    /// Every delivery kept, in arrival order.
    pub fn records(&self) -> Vec<Record> {
        self.shared.lock().records(0, usize::MAX)
    }

    pub fn summary(&self) -> Summary {
        self.shared.lock().summary()
    }

    /// The stored outcome of a key, if it has one.
    pub fn payment(&self, payment_id: u128) -> Option<Payment> {
        self.shared.lock().payment(payment_id)
    }

    /// Stops accepting, lets answers in flight finish (for at most
    /// `PROCESSOR_SHUTDOWN_GRACE`: a `slow_ms` of minutes must not hang the caller), and
    /// returns once the port is free.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(mut task) = self.task.take() else {
            return;
        };
        let grace = bulwark_limits::PROCESSOR_SHUTDOWN_GRACE;
        match tokio::time::timeout(grace, &mut task).await {
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "the processor's server stopped on an error")
            }
            Ok(_) => {}
            Err(_) => {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

impl Drop for ProcessorHandle {
    /// A handle dropped without `shutdown` (a test that ended or panicked) still stops the
    /// server: it closes its port at once and its connections once their answers are out,
    /// rather than go on answering a relay nobody watches.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
