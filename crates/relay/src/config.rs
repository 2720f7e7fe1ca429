//! Where payments go and how hard the relay tries: `bulwark start --processor ...` and the
//! `--relay-*` settings, with the defaults of `bulwark-limits`.

use std::collections::BTreeMap;
use std::time::Duration;

use bulwark_ledger::AccountId;

use crate::backoff::Backoff;
use crate::breaker::BreakerConfig;

#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The processor of each external account given its own (`--processor ACCOUNT=URL`).
    pub routes: BTreeMap<AccountId, String>,
    /// The processor of every other external account (`--processor URL`).
    pub default_route: Option<String>,
    /// Sent as `Authorization: Bearer` when set.
    pub secret: Option<String>,
    pub request_timeout: Duration,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub breaker: BreakerConfig,
    pub max_in_flight: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            routes: BTreeMap::new(),
            default_route: None,
            secret: None,
            request_timeout: bulwark_limits::RELAY_REQUEST_TIMEOUT,
            max_attempts: bulwark_limits::RELAY_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            breaker: BreakerConfig::default(),
            max_in_flight: bulwark_limits::RELAY_MAX_IN_FLIGHT,
        }
    }
}

impl RelayConfig {
    /// Adds a `--processor` value: `URL` (the default) or `ACCOUNT=URL`.
    pub fn add_route(&mut self, spec: &str) -> Result<(), String> {
        let (account, url) = match spec.split_once('=') {
            Some((account, url)) => {
                let id: u128 = account
                    .parse()
                    .map_err(|_| format!("`{account}` in `{spec}` is not an account id"))?;
                (Some(AccountId(id)), url)
            }
            None => (None, spec),
        };
        let url = checked_url(url)?;
        match account {
            Some(id) => {
                if self.routes.insert(id, url).is_some() {
                    return Err(format!("account {id} is given two processors"));
                }
            }
            None => {
                if self.default_route.replace(url).is_some() {
                    return Err("two default processors given".into());
                }
            }
        }
        Ok(())
    }

    /// The processor of `account`, if one is configured.
    pub fn route(&self, account: AccountId) -> Option<&str> {
        self.routes
            .get(&account)
            .or(self.default_route.as_ref())
            .map(String::as_str)
    }

    pub fn has_routes(&self) -> bool {
        self.default_route.is_some() || !self.routes.is_empty()
    }
}

/// A processor's base URL: `http://host:port[/prefix]`, without a trailing slash.
fn checked_url(url: &str) -> Result<String, String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "processor `{url}`: only http:// endpoints are supported (put a TLS-terminating \
             proxy in front of an https:// processor)"
        ));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("processor `{url}` names no host"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_account_then_the_default() {
        let mut c = RelayConfig::default();
        c.add_route("http://bank:80/").unwrap();
        c.add_route("7=http://cards:81").unwrap();
        assert_eq!(c.route(AccountId(7)), Some("http://cards:81"));
        assert_eq!(c.route(AccountId(8)), Some("http://bank:80"));
        for bad in ["https://x", "http://", "x=http://y", "http://a"] {
            let mut c = RelayConfig::default();
            c.add_route("http://a").unwrap();
            assert!(c.add_route(bad).is_err(), "{bad} accepted");
        }
    }
}
