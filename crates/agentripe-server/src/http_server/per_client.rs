//! The connections each client holds: a cap per client, so that one address cannot take every place
//! among the connections served at once (a few requests a minute keep a connection open, and a 429 is
//! an answer too).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, Mutex},
};

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
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of a client, counted until it is dropped.
#[derive(Debug)]
pub struct ClientConnection {
    clients: Arc<ClientConnections>,
    client: IpAddr,
}

impl ClientConnections {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self { cap, open: Mutex::default() })
    }

    /// Counts a new connection from `peer`, unless its client already holds the cap.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<ClientConnection> {
        let client = client_network(peer);
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let held = open.entry(client).or_default();
        if *held >= self.cap {
            return None;
        }
        *held += 1;
        Some(ClientConnection { clients: self.clone(), client })
    }
}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        let mut open = self.clients.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(held) = open.get_mut(&self.client) {
            *held -= 1;
            if *held == 0 {
                open.remove(&self.client);
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
        let clients = ClientConnections::new(2);
        let first = clients.admit(ip("2001:db8::1")).expect("first");
        let _second = clients.admit(ip("2001:db8::2")).expect("second, same /64");
        assert!(clients.admit(ip("2001:db8::3")).is_none(), "a third from the same /64");
        assert!(clients.admit(ip("203.0.113.7")).is_some(), "another client is not held back");
        drop(first);
        assert!(clients.admit(ip("2001:db8::3")).is_some(), "a place back once one closes");
        assert_eq!(clients.open.lock().expect("lock").len(), 1, "closed clients are forgotten");
    }
}
