//! The connections each client holds: a cap per client, so that one address cannot take every place
//! among the connections served at once (a few requests a minute keep a connection open, and a 429 is
//! an answer too).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    num::NonZeroUsize,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// Refusals are logged at most this often, so that a flood does not flood the log too.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The part of `address` that one client controls as a whole: an IPv4 address, or an IPv6 /64 (one
/// subscriber's network hands out a whole /64, so a client counted by its full IPv6 address would
/// count afresh from each).
pub fn client_network(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// The connections open per client, and how many one may hold.
#[derive(Debug)]
pub struct ClientConnections {
    cap: NonZeroUsize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    open: HashMap<IpAddr, usize>,
    refused_unlogged: u64,
    logged_at: Option<Instant>,
}

/// One open connection of a client, counted until it is dropped.
#[derive(Debug)]
pub struct ClientConnection {
    clients: Arc<ClientConnections>,
    client: IpAddr,
}

impl ClientConnections {
    pub fn new(cap: NonZeroUsize) -> Arc<Self> {
        Arc::new(Self { cap, counts: Mutex::default() })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a new connection from `peer`, unless its client already holds the cap. A refusal is
    /// logged (at most once a minute, with how many there were): honest clients behind one address (a
    /// reverse proxy not declared as one, a large NAT) are refused too, and the operator must hear of it.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<ClientConnection> {
        let client = client_network(peer);
        let mut counts = self.counts();
        let held = counts.open.entry(client).or_default();
        if *held < self.cap.get() {
            *held += 1;
            return Some(ClientConnection { clients: self.clone(), client });
        }
        counts.refused_unlogged += 1;
        if counts.logged_at.is_none_or(|logged| logged.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                %client,
                refused = counts.refused_unlogged,
                cap = self.cap,
                "connections refused: a client held MAX_CONNECTIONS_PER_CLIENT (behind a reverse proxy, set RATE_LIMIT_TRUST_FORWARDED_FOR)"
            );
            counts.refused_unlogged = 0;
            counts.logged_at = Some(Instant::now());
        }
        None
    }
}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        let mut counts = self.clients.counts();
        if let Some(held) = counts.open.get_mut(&self.client) {
            *held -= 1;
            if *held == 0 {
                counts.open.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_an_ipv4_client_its_address() {
        let client = |text: &str| client_network(ip(text));
        assert_eq!(client("2001:db8:1:2:aaaa::1"), client("2001:db8:1:2:ffff:eeee:dddd:cccc"), "one /64");
        assert_ne!(client("2001:db8:1:2::1"), client("2001:db8:1:3::1"), "another /64");
        assert_eq!(client("2001:db8:1:2:aaaa::1"), ip("2001:db8:1:2::"));
        assert_eq!(client("203.0.113.7"), ip("203.0.113.7"));
        assert_ne!(client("203.0.113.7"), client("203.0.113.8"));
        assert_eq!(client("::ffff:203.0.113.7"), client("203.0.113.7"), "IPv4 mapped into IPv6 is IPv4");
    }

    #[test]
    fn a_client_holds_at_most_its_cap_and_gets_a_place_back_when_one_closes() {
        let clients = ClientConnections::new(NonZeroUsize::new(2).expect("non-zero"));
        let first = clients.admit(ip("2001:db8::1")).expect("first");
        let _second = clients.admit(ip("2001:db8::2")).expect("second, same /64");
        assert!(clients.admit(ip("2001:db8::3")).is_none(), "a third from the same /64");
        assert!(clients.admit(ip("203.0.113.7")).is_some(), "another client is not held back");
        drop(first);
        assert!(clients.admit(ip("2001:db8::3")).is_some(), "a place back once one closes");
        assert_eq!(clients.counts().open.len(), 1, "closed clients are forgotten");
    }
}
