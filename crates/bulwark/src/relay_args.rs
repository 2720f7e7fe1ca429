//! `bulwark start`'s outbox relay settings: where payments to external accounts go, and how hard
//! the leader tries (docs/operations.md, "Payments to external accounts").

use std::path::PathBuf;
use std::time::Duration;

use bulwark_relay::RelayConfig;

#[derive(clap::Args, Clone, Debug, Default)]
pub struct RelayArgs {
    /// The payment processor of external accounts: `URL` for all of them, `ACCOUNT=URL` for one
    /// (repeat). Only the leader delivers; give every member the same.
    #[arg(long = "processor", env = "BULWARK_PROCESSOR", value_delimiter = ',')]
    pub processors: Vec<String>,
    /// A file holding the secret sent to processors as `Authorization: Bearer`.
    #[arg(long, env = "BULWARK_PROCESSOR_SECRET_FILE")]
    pub processor_secret_file: Option<PathBuf>,
    /// How long one delivery may take before it counts as failed and is retried.
    #[arg(long, default_value_t = bulwark_limits::RELAY_REQUEST_TIMEOUT.as_millis() as u64)]
    pub relay_timeout_ms: u64,
    /// Deliveries without a definite answer before a payment is voided and dead-lettered.
    #[arg(long, default_value_t = bulwark_limits::RELAY_MAX_ATTEMPTS)]
    pub relay_max_attempts: u32,
    /// The first retry's backoff cap (doubling per failure, full jitter).
    #[arg(long, default_value_t = bulwark_limits::RELAY_BACKOFF_BASE.as_millis() as u64)]
    pub relay_backoff_base_ms: u64,
    #[arg(long, default_value_t = bulwark_limits::RELAY_BACKOFF_MAX.as_millis() as u64)]
    pub relay_backoff_max_ms: u64,
    /// Deliveries in flight at once, over all processors.
    #[arg(long, default_value_t = bulwark_limits::RELAY_MAX_IN_FLIGHT)]
    pub relay_max_in_flight: usize,
    /// A processor's breaker opens after this many failed deliveries ...
    #[arg(long, default_value_t = bulwark_limits::BREAKER_FAILURES)]
    pub breaker_failures: u32,
    /// ... within this window ...
    #[arg(long, default_value_t = bulwark_limits::BREAKER_WINDOW.as_millis() as u64)]
    pub breaker_window_ms: u64,
    /// ... and lets one probe through after this long open.
    #[arg(long, default_value_t = bulwark_limits::BREAKER_OPEN_FOR.as_millis() as u64)]
    pub breaker_open_ms: u64,
}

impl RelayArgs {
    /// The relay's configuration; `None` when no processor is given (no relay runs, and
    /// payments wait in the outbox).
    pub fn config(&self) -> anyhow::Result<Option<RelayConfig>> {
        if self.processors.is_empty() {
            return Ok(None);
        }
        let positive = |name: &str, v: u64| {
            anyhow::ensure!(v > 0, "--{name} must be above 0");
            Ok(())
        };
        positive("relay-timeout-ms", self.relay_timeout_ms)?;
        positive("relay-max-attempts", u64::from(self.relay_max_attempts))?;
        positive("relay-max-in-flight", self.relay_max_in_flight as u64)?;
        positive("breaker-failures", u64::from(self.breaker_failures))?;
        anyhow::ensure!(
            self.relay_backoff_base_ms <= self.relay_backoff_max_ms,
            "--relay-backoff-base-ms is above --relay-backoff-max-ms"
        );
        let ms = Duration::from_millis;
        let mut config = RelayConfig {
            request_timeout: ms(self.relay_timeout_ms),
            max_attempts: self.relay_max_attempts,
            backoff: bulwark_relay::backoff::Backoff {
                base: ms(self.relay_backoff_base_ms),
                max: ms(self.relay_backoff_max_ms),
            },
            breaker: bulwark_relay::breaker::BreakerConfig {
                failures: self.breaker_failures,
                window: ms(self.breaker_window_ms),
                open_for: ms(self.breaker_open_ms),
            },
            max_in_flight: self.relay_max_in_flight,
            ..RelayConfig::default()
        };
        for spec in &self.processors {
            config
                .add_route(spec)
                .map_err(|e| anyhow::anyhow!("--processor: {e}"))?;
        }
        if let Some(path) = &self.processor_secret_file {
            let secret = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--processor-secret-file {}: {e}", path.display()))?;
            config.secret = Some(secret.trim().to_string());
        }
        Ok(Some(config))
    }

    /// The flags that give a local cluster's nodes these settings.
    pub fn to_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        for p in &self.processors {
            flags.extend(["--processor".to_string(), p.clone()]);
        }
        if let Some(path) = &self.processor_secret_file {
            flags.extend(["--processor-secret-file".into(), path.display().to_string()]);
        }
        let numbers = [
            ("--relay-timeout-ms", self.relay_timeout_ms),
            ("--relay-max-attempts", u64::from(self.relay_max_attempts)),
            ("--relay-backoff-base-ms", self.relay_backoff_base_ms),
            ("--relay-backoff-max-ms", self.relay_backoff_max_ms),
            ("--relay-max-in-flight", self.relay_max_in_flight as u64),
            ("--breaker-failures", u64::from(self.breaker_failures)),
            ("--breaker-window-ms", self.breaker_window_ms),
            ("--breaker-open-ms", self.breaker_open_ms),
        ];
        for (flag, value) in numbers {
            flags.extend([flag.to_string(), value.to_string()]);
        }
        flags
    }
}
