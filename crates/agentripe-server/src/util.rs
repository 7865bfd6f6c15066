//! Small helpers every module uses: the clock, and how addresses and hashes are spelled in storage.

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
