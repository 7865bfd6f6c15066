//! Evaluating a reviewer before trusting it with money: a labelled set of deliverables (good work,
//! bad work, and injection attempts) run against the configured endpoint, scored for accuracy and,
//! above all, false approvals. `cargo run -p agentripe-review --example evaluate` runs it.

use std::time::Duration;

use serde::Deserialize;

use crate::{ReviewInput, Reviewer};

/// The labelled set shipped with the crate.
pub const DELIVERABLES: &str = include_str!("../eval/deliverables.jsonl");

/// What a case is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Good,
    Bad,
    Injection,
}

/// One labelled deliverable.
#[derive(Clone, Debug, Deserialize)]
pub struct Case {
    pub id: String,
    pub kind: Kind,
    pub reviewer_request: String,
    pub task_detail: Option<String>,
    #[serde(default)]
    pub task_metadata: Option<String>,
    pub result: String,
    pub expected_approved: bool,
}

/// Parses a JSON-lines labelled set.
pub fn parse_cases(text: &str) -> Result<Vec<Case>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(number, line)| {
            serde_json::from_str(line).map_err(|error| format!("line {}: {error}", number + 1))
        })
        .collect()
}

/// How a reviewer did on a set.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub total: usize,
    pub correct: usize,
    /// Approved although it should not be: money paid for bad work. The number that matters.
    pub false_approvals: Vec<String>,
    pub false_rejections: Vec<String>,
    /// No verdict (errors, timeouts, garbage): neither right nor wrong.
    pub no_verdict: Vec<String>,
    pub latencies: Vec<Duration>,
}

impl Report {
    /// Correct verdicts over all cases.
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 { 0.0 } else { self.correct as f64 / self.total as f64 }
    }

    fn latency(&self, quantile: f64) -> Option<Duration> {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 * quantile).ceil() as usize).checked_sub(1)?;
        sorted.get(index.min(sorted.len() - 1)).copied()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "cases            {}", self.total)?;
        writeln!(f, "accuracy         {:.1}% ({} correct)", 100.0 * self.accuracy(), self.correct)?;
        writeln!(f, "false approvals  {} {:?}", self.false_approvals.len(), self.false_approvals)?;
        writeln!(f, "false rejections {} {:?}", self.false_rejections.len(), self.false_rejections)?;
        writeln!(f, "no verdict       {} {:?}", self.no_verdict.len(), self.no_verdict)?;
        write!(f, "latency          p50 {:?}, max {:?}", self.latency(0.5), self.latency(1.0))
    }
}

/// Runs every case through the reviewer, one at a time.
pub async fn evaluate(reviewer: &Reviewer, cases: &[Case]) -> Report {
    let mut report = Report { total: cases.len(), ..Report::default() };
    for case in cases {
        let input = ReviewInput {
            reviewer_request: case.reviewer_request.clone(),
            task_detail: case.task_detail.clone(),
            task_metadata: case.task_metadata.clone(),
            result: case.result.clone(),
        };
        match reviewer.review(&input).await {
            Ok(review) => {
                report.latencies.push(review.latency);
                match (review.approved, case.expected_approved) {
                    (got, expected) if got == expected => report.correct += 1,
                    (true, false) => report.false_approvals.push(case.id.clone()),
                    _ => report.false_rejections.push(case.id.clone()),
                }
            }
            Err(_) => report.no_verdict.push(case.id.clone()),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_set_is_labelled_and_balanced() {
        let cases = parse_cases(DELIVERABLES).expect("valid JSON lines");
        let count = |kind| cases.iter().filter(|case| case.kind == kind).count();
        assert!(count(Kind::Good) >= 5 && count(Kind::Bad) >= 5 && count(Kind::Injection) >= 5, "{cases:?}");
        assert!(cases.iter().filter(|c| c.kind == Kind::Bad).all(|c| !c.expected_approved));
        let mut ids: Vec<_> = cases.iter().map(|case| &case.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), cases.len(), "ids are unique");
        assert!(parse_cases("{\"id\": 1}").is_err());
    }
}
