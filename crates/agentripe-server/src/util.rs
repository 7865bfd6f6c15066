//! Small helpers every module uses: the clock, how addresses and hashes are spelled in storage, and a
//! chain reading reused for about a block.

/// Milliseconds since the UNIX epoch: the unit of every stored time.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Seconds since the UNIX epoch: the unit of x402 and of signed headers.
pub fn now_secs() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default()
}

/// Lowercase 0x hex, the stored spelling of addresses and hashes.
pub fn hex(value: impl AsRef<[u8]>) -> String {
    format!("0x{}", alloy::primitives::hex::encode(value))
}

/// A chain number (block, nonce) as the database stores it; no chain reaches `i64::MAX`.
pub fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A duration in the unit of every stored time (milliseconds); none is that long.
pub fn to_ms(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// How long a chain reading that many callers share (the fee estimate, the head) is reused: half of Base's
/// 2 s block.
pub const READING_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// A reading from the chain reused for `ttl`: under load one read serves every caller within it, where
/// each would otherwise ask the node for the same answer. No caller waits on another's read: when the
/// node hangs, each gives up on its own timeout rather than queueing behind the others'.
#[derive(Debug)]
pub struct Recent<T> {
    ttl: std::time::Duration,
    last: std::sync::Mutex<Option<(std::time::Instant, T)>>,
}

impl<T: Clone> Recent<T> {
    pub fn new(ttl: std::time::Duration) -> Self {
        Self { ttl, last: std::sync::Mutex::new(None) }
    }

    /// The last reading if it is younger than the ttl, else a fresh one from `read`.
    pub async fn get<E, F: Future<Output = Result<T, E>>>(&self, read: impl FnOnce() -> F) -> Result<T, E> {
        if let Some((read_at, value)) = &*self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
            && read_at.elapsed() < self.ttl
        {
            return Ok(value.clone());
        }
        // Aged from when it was asked for, so it is never older than the ttl says.
        let asked_at = std::time::Instant::now();
        let value = read().await?;
        *self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((asked_at, value.clone()));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicU32, Ordering},
        time::Duration,
    };

    use super::Recent;

    #[tokio::test]
    async fn a_reading_serves_its_ttl_then_is_taken_again() {
        let reads = AtomicU32::new(0);
        let read = || async { Ok::<_, ()>(reads.fetch_add(1, Ordering::SeqCst)) };
        let recent = Recent::new(Duration::from_millis(200));
        assert_eq!(recent.get(read).await, Ok(0));
        assert_eq!(recent.get(read).await, Ok(0), "within the ttl: the same reading, not asked again");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(recent.get(read).await, Ok(1), "after it: read anew");
        let failing = Recent::<u32>::new(Duration::from_secs(60));
        assert_eq!(failing.get(|| async { Err("down") }).await, Err("down"));
        assert_eq!(failing.get(|| async { Ok::<_, &str>(7) }).await, Ok(7), "a failed read is not kept");
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_hanging_read_holds_up_no_other_caller() {
        let recent = Recent::<u32>::new(Duration::from_secs(60));
        let hanging = recent.get(std::future::pending::<Result<u32, ()>>);
        let other = async {
            tokio::time::timeout(Duration::from_secs(5), recent.get(|| async { Ok::<_, ()>(7) })).await
        };
        tokio::select! {
            _ = hanging => panic!("a pending read never finishes"),
            answer = other => assert_eq!(answer, Ok(Ok(7)), "answered while the other read hangs"),
        }
    }
}
