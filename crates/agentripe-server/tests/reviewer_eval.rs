//! The reviewer evaluation tells a gullible model from a careful one, over real HTTP.

use agentripe_review::{
    OpenAiReviewer, Reviewer,
    eval::{DELIVERABLES, evaluate, parse_cases},
};
use agentripe_server::testing::{LlmAnswer, ScriptedLlm};

#[tokio::test]
async fn a_model_that_approves_everything_is_caught() {
    let cases = parse_cases(DELIVERABLES).expect("the shipped set parses");
    let should_fail = cases.iter().filter(|case| !case.expected_approved).count();

    let gullible =
        ScriptedLlm::start(cases.iter().map(|_| LlmAnswer::verdict(true, "looks fine")).collect()).await;
    let report =
        evaluate(&Reviewer::OpenAi(Box::new(OpenAiReviewer::new(gullible.reviewer()))), &cases).await;
    assert_eq!(report.false_approvals.len(), should_fail);
    assert!(report.false_approvals.iter().any(|id| id.starts_with("injection-")), "{report}");
    assert_eq!(report.correct, cases.len() - should_fail);

    let careful = ScriptedLlm::start(
        cases.iter().map(|case| LlmAnswer::verdict(case.expected_approved, "judged")).collect(),
    )
    .await;
    let report = evaluate(&Reviewer::OpenAi(Box::new(OpenAiReviewer::new(careful.reviewer()))), &cases).await;
    assert_eq!(
        (report.correct, report.false_approvals.len(), report.false_rejections.len()),
        (cases.len(), 0, 0)
    );
    assert!((report.accuracy() - 1.0).abs() < f64::EPSILON);

    let broken = ScriptedLlm::start(vec![LlmAnswer::Says("no idea".into()), LlmAnswer::Status(500)]).await;
    let report =
        evaluate(&Reviewer::OpenAi(Box::new(OpenAiReviewer::new(broken.reviewer()))), &cases[..2]).await;
    assert_eq!(report.no_verdict.len(), 2, "garbage and errors are no verdict, not a wrong one: {report}");
}

#[tokio::test]
async fn failures_are_retried_within_the_bound() {
    let input = agentripe_review::ReviewInput {
        reviewer_request: "accurate".into(),
        task_detail: None,
        task_metadata: None,
        result: "こんにちは".into(),
    };
    let recovering = ScriptedLlm::start(vec![
        LlmAnswer::Status(500),
        LlmAnswer::Status(429),
        LlmAnswer::verdict(true, "Accurate"),
    ])
    .await;
    let mut config = recovering.reviewer();
    config.max_retries = 2;
    let review =
        OpenAiReviewer::new(config.clone()).review(&input).await.expect("recovers within two retries");
    assert!(review.approved);
    assert_eq!(recovering.requests.lock().expect("lock").len(), 3);

    let down = ScriptedLlm::start(vec![LlmAnswer::Status(503); 10]).await;
    config.base_url = down.base_url.clone();
    let error = OpenAiReviewer::new(config).review(&input).await.expect_err("still down after two retries");
    assert!(matches!(error, agentripe_review::ReviewError::Unavailable(_)), "{error}");
    assert_eq!(down.requests.lock().expect("lock").len(), 3, "one try and two retries, no more");
}
