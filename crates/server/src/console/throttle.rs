//! The sign-in form's brake against guessing keys. Keys carry 256 bits, so
//! guessing one is hopeless; the brake is there so that a script hammering
//! the form costs it time and shows in the log, and so that one source
//! cannot burn the server's CPU on hashing guesses.
//!
//! Failed sign-ins are counted per client address (an IPv6 client's whole
//! /64 counts as one, as for the connection bound) and per key prefix (what
//! `display_prefix` shows of a key: guesses aimed at one key from many
//! addresses). After [`FREE_FAILURES`] failures of one address or one
//! prefix, each further failure closes the form to it for twice as long as
//! the last (1 s, 2 s, 4 s, … at most [`MAX_WAIT`]); while closed, posts are
//! answered 429 with `Retry-After` before the key is even looked at, so a
//! guess made then is never tested. A counter is forgotten [`FORGET`] after
//! its last failure. A success does not reset the address's counter (else
//! an attacker holding any valid key could clear it between guesses).
//!
//! Behind a reverse proxy every client has the proxy's address: the
//! address counter then brakes everyone together (as the per-address
//! connection bound does); the prefix counter still works per key.
//!
//! Memory is bounded: at most [`MAX_ENTRIES`] counters; beyond, the one
//! whose last failure is oldest is dropped first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before the form starts to close.
pub const FREE_FAILURES: u32 = 5;
/// The first wait after the free failures; it doubles with each failure.
pub const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// A counter without a failure this long is forgotten.
pub const FORGET: Duration = Duration::from_secs(3600);
/// Counters kept at most.
pub const MAX_ENTRIES: usize = 100_000;

#[derive(Clone, PartialEq, Eq, Hash)]
enum Source {
    Address(IpAddr),
    Prefix(String),
}

struct Failures {
    count: u32,
    last: Instant,
    closed_until: Instant,
}

/// Failed console sign-ins, by client address and by key prefix.
#[derive(Default)]
pub struct SignInThrottle {
    counters: Mutex<HashMap<Source, Failures>>,
}

fn sources(addr: Option<IpAddr>, prefix: &str) -> Vec<Source> {
    let mut s = vec![Source::Prefix(prefix.to_owned())];
    if let Some(ip) = addr {
        s.push(Source::Address(crate::conn::client_key(ip)));
    }
    s
}

/// The wait after the `count`-th failure (none while within the free ones).
fn wait_after(count: u32) -> Duration {
    match count.checked_sub(FREE_FAILURES + 1) {
        None => Duration::ZERO,
        Some(doublings) => FIRST_WAIT
            .checked_mul(1u32 << doublings.min(20))
            .map_or(MAX_WAIT, |w| w.min(MAX_WAIT)),
    }
}

impl SignInThrottle {
    pub fn new() -> Self {
        SignInThrottle::default()
    }

    /// How long the form stays closed to this address or key prefix
    /// (`None`: open). Checked before the key is looked at.
    pub fn closed_for(&self, addr: Option<IpAddr>, prefix: &str) -> Option<Duration> {
        let now = Instant::now();
        let m = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        sources(addr, prefix)
            .iter()
            .filter_map(|s| m.get(s))
            .filter(|f| f.closed_until > now)
            .map(|f| f.closed_until - now)
            .max()
    }

    /// Count a failed sign-in against the address and the key prefix.
    pub fn failed(&self, addr: Option<IpAddr>, prefix: &str) {
        let now = Instant::now();
        let mut m = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        for s in sources(addr, prefix) {
            if !m.contains_key(&s) && m.len() >= MAX_ENTRIES {
                m.retain(|_, f| now.duration_since(f.last) < FORGET);
                if m.len() >= MAX_ENTRIES
                    && let Some(oldest) =
                        m.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| k.clone())
                {
                    m.remove(&oldest);
                }
            }
            let f = m.entry(s).or_insert(Failures {
                count: 0,
                last: now,
                closed_until: now,
            });
            if now.duration_since(f.last) >= FORGET {
                f.count = 0;
            }
            f.count = f.count.saturating_add(1);
            f.last = now;
            f.closed_until = now + wait_after(f.count);
        }
    }

    /// Counters held now (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

/// Seconds for `Retry-After`: rounded up, at least 1.
pub fn retry_after_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_after_the_free_failures_up_to_the_cap() {
        assert_eq!(wait_after(FREE_FAILURES), Duration::ZERO);
        assert_eq!(wait_after(FREE_FAILURES + 1), Duration::from_secs(1));
        assert_eq!(wait_after(FREE_FAILURES + 2), Duration::from_secs(2));
        assert_eq!(wait_after(FREE_FAILURES + 4), Duration::from_secs(8));
        assert_eq!(wait_after(FREE_FAILURES + 40), MAX_WAIT);
        assert_eq!(wait_after(u32::MAX), MAX_WAIT);
    }

    #[test]
    fn an_address_or_a_prefix_closes_the_form_and_ipv6_counts_by_64() {
        let t = SignInThrottle::new();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        for i in 0..=FREE_FAILURES {
            assert!(t.closed_for(Some(a), "al_x").is_none());
            t.failed(Some(if i % 2 == 0 { a } else { b }), &format!("al_{i}"));
        }
        assert!(t.closed_for(Some(b), "al_new").is_some(), "same /64");
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(t.closed_for(Some(c), "al_new").is_none());
        for _ in 0..=FREE_FAILURES {
            t.failed(None, "al_tgt");
        }
        assert!(t.closed_for(Some(c), "al_tgt").is_some(), "by prefix");
        assert!(retry_after_secs(Duration::from_millis(1)) == 1);
    }

    #[test]
    fn counters_are_bounded() {
        let t = SignInThrottle::new();
        for i in 0..(MAX_ENTRIES + 10) {
            t.failed(None, &i.to_string());
        }
        assert!(t.len() <= MAX_ENTRIES);
    }
}
