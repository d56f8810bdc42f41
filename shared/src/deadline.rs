//! The invocation's deadline: one bound on everything a plugin process waits for (datastore
//! round trips, the node's IPAM lock, a delegated plugin, iptables-restore), so that a
//! stalled or dripping peer costs a pod start a known time instead of holding it, and every
//! lock the plugin took, for ever.
//!
//! Why one deadline and not per-read timeouts: a server that sends a byte every few seconds
//! never trips a read timeout, and three etcd endpoints that each time out after 5 s cost
//! 15 s. The deadline is armed once when the process starts and every wait takes what is left
//! of it.
//!
//! A plugin that runs another plugin passes its deadline on in [`ENV`], as an absolute time,
//! so that the child gives up (and answers with an error object) before the parent has to
//! kill it.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long one invocation may take when nothing narrower was inherited: well inside the
/// kubelet's runtime request timeout (2 minutes), so that the runtime sees our error and
/// retries instead of cancelling a plugin that is still working, and longer than any healthy
/// datastore round trip by orders of magnitude.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(30);

/// The absolute deadline, in milliseconds since the Unix epoch, that a parent plugin passes
/// to the plugins it runs. A value that is not a number is ignored.
pub const ENV: &str = "CNI_SUITE_DEADLINE_UNIX_MS";

static DEADLINE: Mutex<Option<Instant>> = Mutex::new(None);

/// Arms the deadline: `budget` from now, or the inherited one when that is sooner. Called
/// once by the plugin skeleton; calling it again re-arms.
pub fn arm(budget: Duration, inherited: Option<&str>) {
    let mut deadline = Instant::now() + budget;
    if let Some(at) = inherited.and_then(instant_of_unix_ms) {
        deadline = deadline.min(at);
    }
    set(deadline);
}

fn set(deadline: Instant) {
    let mut slot = DEADLINE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *slot = Some(deadline);
}

fn get() -> Instant {
    let mut slot = DEADLINE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Code that runs outside the skeleton (a unit test, a library user) gets the default.
    *slot.get_or_insert_with(|| Instant::now() + DEFAULT_BUDGET)
}

/// What is left, zero once it has passed.
pub fn remaining() -> Duration {
    get().saturating_duration_since(Instant::now())
}

/// Whether the deadline has passed.
pub fn expired() -> bool {
    remaining().is_zero()
}

/// `limit`, or what is left when that is shorter: the timeout for one wait.
pub fn capped(limit: Duration) -> Duration {
    limit.min(remaining())
}

/// How much sooner than ours a child's deadline is: long enough for it to answer with its
/// own error object (and unwind what it started) before we give up on it.
const CHILD_MARGIN: Duration = Duration::from_secs(1);

/// The deadline as [`ENV`]'s value, for a child process: a little before ours.
pub fn to_env() -> String {
    let left = remaining();
    let left = left.saturating_sub(CHILD_MARGIN.min(left / 10));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (now + left).as_millis().to_string()
}

fn instant_of_unix_ms(text: &str) -> Option<Instant> {
    let at = Duration::from_millis(text.trim().parse().ok()?);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    // Already past: the deadline is now (the invocation fails fast, as its parent will).
    Some(Instant::now() + at.saturating_sub(now))
}

/// The deadline passed while waiting for `what`.
#[derive(Debug, thiserror::Error)]
#[error(
    "gave up waiting for {what}: the invocation's deadline passed ({} s after the plugin \
     started, or the deadline its caller passed in {ENV})",
    DEFAULT_BUDGET.as_secs()
)]
pub struct Expired {
    pub what: String,
}

/// `Err` once the deadline has passed.
pub fn check(what: impl FnOnce() -> String) -> Result<(), Expired> {
    if expired() {
        Err(Expired { what: what() })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix_ms_in(secs: u64) -> String {
        (SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            + Duration::from_secs(secs))
        .as_millis()
        .to_string()
    }

    #[test]
    fn an_inherited_deadline_narrows_and_never_widens() {
        arm(Duration::from_secs(30), Some(&unix_ms_in(2)));
        assert!(remaining() <= Duration::from_secs(2));
        assert!(remaining() > Duration::from_secs(1));
        arm(Duration::from_secs(30), Some(&unix_ms_in(600)));
        assert!(remaining() <= Duration::from_secs(30));
        assert!(remaining() > Duration::from_secs(20));
        arm(Duration::from_secs(30), Some("not a time"));
        assert!(remaining() > Duration::from_secs(20));
        arm(Duration::from_secs(30), Some("1"));
        assert!(expired());
        assert!(check(|| "x".into()).is_err());
        // The value passed on round-trips.
        arm(Duration::from_secs(5), None);
        let passed = to_env();
        arm(Duration::from_secs(30), Some(&passed));
        assert!(remaining() < Duration::from_millis(4600));
        assert!(remaining() > Duration::from_secs(3));
    }
}
