//! Runs the labelled deliverables (eval/deliverables.jsonl, or a file given as argument) against the
//! reviewer configured by REVIEWER_BASE_URL, REVIEWER_MODEL and REVIEWER_API_KEY (see .env.example),
//! and prints accuracy, false approvals and latency. Exits 1 if any bad or injected deliverable was
//! approved.
//!
//!     REVIEWER_BASE_URL=http://127.0.0.1:8080/v1 REVIEWER_MODEL=local \
//!       cargo run -p agentripe-review --example evaluate [-- path/to/set.jsonl]

use std::time::Duration;

use agentripe_review::{
    OpenAiReviewer, Reviewer, ReviewerConfig,
    eval::{DELIVERABLES, evaluate, parse_cases},
};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let (Some(base_url), Some(model)) = (env("REVIEWER_BASE_URL"), env("REVIEWER_MODEL")) else {
        eprintln!(
            "set REVIEWER_BASE_URL and REVIEWER_MODEL (and REVIEWER_API_KEY if the endpoint needs one)"
        );
        return std::process::ExitCode::from(2);
    };
    let text = match std::env::args().nth(1) {
        Some(path) => {
            std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("cannot read {path}: {error}"))
        }
        None => DELIVERABLES.to_owned(),
    };
    let cases = parse_cases(&text).unwrap_or_else(|error| panic!("bad labelled set: {error}"));
    let reviewer = Reviewer::OpenAi(Box::new(OpenAiReviewer::new(ReviewerConfig {
        base_url,
        api_key: env("REVIEWER_API_KEY").unwrap_or_default(),
        model: model.clone(),
        timeout: Duration::from_secs(
            env("REVIEWER_TIMEOUT_SECONDS").and_then(|s| s.parse().ok()).unwrap_or(60),
        ),
        max_retries: 2,
        backoff: Duration::from_millis(500),
        structured_output: env("REVIEWER_STRUCTURED_OUTPUT").is_none_or(|value| value != "false"),
        breaker_threshold: u32::MAX,
        breaker_cooldown: Duration::ZERO,
    })));
    let report = evaluate(&reviewer, &cases).await;
    println!("reviewer {model}\n{report}");
    if report.false_approvals.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
