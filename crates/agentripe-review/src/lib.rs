//! The quality gate between a vendor's result and the buyer's money: a reviewer over any
//! OpenAI-compatible chat-completions endpoint (OpenAI, a local llama.cpp, Ollama or vLLM server).
//!
//! A reviewer that is down, slow, rate-limited or answers something that is not a verdict gives *no
//! verdict* ([`ReviewError`]): that is never a rejection, and it never moves money.

pub mod eval;
mod openai;
pub mod prompt;

use std::time::Duration;

pub use openai::OpenAiReviewer;
use serde::{Deserialize, Serialize};

/// What the reviewer judges: the buyer's criteria, the task, and the vendor's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReviewInput {
    pub reviewer_request: String,
    pub task_detail: Option<String>,
    pub task_metadata: Option<String>,
    pub result: String,
}

/// A verdict with what produced it, for the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Review {
    pub approved: bool,
    pub reason: String,
    pub model: String,
    pub prompt_version: &'static str,
    pub latency: Duration,
    pub total_tokens: Option<u32>,
}

/// The SHA-256 of exactly what a review sends (prompt version, system and user messages), 0x hex:
/// the same submission under the same prompt has the same hash, and is never reviewed twice.
pub fn input_hash(input: &ReviewInput) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in [prompt::PROMPT_VERSION, prompt::system(), &prompt::user(input)] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("0x{hex}")
}

/// No verdict.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// No reviewer endpoint is configured: reviewed tasks wait.
    #[error(
        "no reviewer is configured on this server; the task waits for one (it is never approved without review)"
    )]
    Unconfigured,
    /// The endpoint failed, after retries.
    #[error("the reviewer is unavailable: {0}")]
    Unavailable(String),
}

/// Settings of an OpenAI-compatible reviewer.
#[derive(Clone)]
pub struct ReviewerConfig {
    /// e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    pub api_key: String,
    pub model: String,
    /// Per attempt.
    pub timeout: Duration,
    /// Extra attempts after a transient failure.
    pub max_retries: u32,
    /// First backoff; doubles each retry.
    pub backoff: Duration,
    /// Whether to ask for a JSON-schema answer (structured output); off for endpoints without it.
    pub structured_output: bool,
    /// Consecutive failed reviews that open the circuit: further reviews fail at once, sparing the
    /// endpoint, until `breaker_cooldown` has passed and one trial review is let through.
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
}

/// Everything but the API key, which is never printed.
impl std::fmt::Debug for ReviewerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReviewerConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &if self.api_key.is_empty() { "" } else { "<redacted>" })
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("structured_output", &self.structured_output)
            .finish_non_exhaustive()
    }
}

/// The reviewer the server uses.
#[derive(Debug)]
pub enum Reviewer {
    OpenAi(Box<OpenAiReviewer>),
    /// No endpoint configured.
    Unconfigured,
}

impl Reviewer {
    /// Judges a submission.
    pub async fn review(&self, input: &ReviewInput) -> Result<Review, ReviewError> {
        match self {
            Self::OpenAi(reviewer) => reviewer.review(input).await,
            Self::Unconfigured => Err(ReviewError::Unconfigured),
        }
    }
}

/// The answer a model must give.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    approved: bool,
    reason: String,
}

/// Reads a verdict from a model's text: a JSON object, possibly wrapped in a code fence or prose by
/// endpoints without structured output. Anything else is no verdict.
fn parse_answer(text: &str) -> Option<(bool, String)> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    let answer: Answer = serde_json::from_str(text.get(start..=end)?).ok()?;
    let reason = answer.reason.trim();
    (!reason.is_empty()).then(|| (answer.approved, reason.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_hash_names_the_exact_submission() {
        let input = ReviewInput {
            reviewer_request: "accurate".into(),
            task_detail: Some("translate".into()),
            task_metadata: None,
            result: "こんにちは".into(),
        };
        let hash = input_hash(&input);
        assert_eq!(hash.len(), 66);
        assert_eq!(hash, input_hash(&input.clone()));
        assert_ne!(hash, input_hash(&ReviewInput { result: "こんにちは ".into(), ..input.clone() }));
        assert_ne!(hash, input_hash(&ReviewInput { reviewer_request: "fast".into(), ..input }));
    }

    #[test]
    fn answers_parse_defensively() {
        assert_eq!(parse_answer(r#"{"approved":true,"reason":"ok"}"#), Some((true, "ok".into())));
        assert_eq!(
            parse_answer("```json\n{\"approved\": false, \"reason\": \"wrong language\"}\n```"),
            Some((false, "wrong language".into()))
        );
        for garbage in [
            "",
            "approved",
            "{}",
            r#"{"approved":"yes","reason":"x"}"#,
            r#"{"approved":true}"#,
            r#"{"approved":true,"reason":"  "}"#,
            r#"{"approved":true,"reason":"x","extra":1}"#,
        ] {
            assert_eq!(parse_answer(garbage), None, "{garbage:?}");
        }
    }
}
