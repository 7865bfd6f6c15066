//! The spend policy, rule by rule: each refuses before anything is signed (a counting signer shows the
//! key was never asked), a payment within every limit is signed, budgets roll, approvals are
//! single-use, brakes pause until a person resumes, and the audit log cannot be rewritten.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use agentripe_agent::{
    Ask, Context, Decision, Policy, Purchase, Rule, Wallet,
    policy::{Burst, Usdc},
};
use agentripe_x402::{Network, Offer, v2};
use alloy::{
    primitives::{Address, B256, ChainId, Signature, U256},
    signers::{Signer, SignerSync, local::PrivateKeySigner},
};

/// A key that counts its signatures.
#[derive(Clone, Debug)]
struct CountingSigner {
    key: PrivateKeySigner,
    signatures: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Signer for CountingSigner {
    async fn sign_hash(&self, hash: &B256) -> alloy::signers::Result<Signature> {
        self.sign_hash_sync(hash)
    }
    fn address(&self) -> Address {
        self.key.address()
    }
    fn chain_id(&self) -> Option<ChainId> {
        None
    }
    fn set_chain_id(&mut self, _: Option<ChainId>) {}
}

impl SignerSync for CountingSigner {
    fn sign_hash_sync(&self, hash: &B256) -> alloy::signers::Result<Signature> {
        self.signatures.fetch_add(1, Ordering::SeqCst);
        self.key.sign_hash_sync(hash)
    }
    fn chain_id_sync(&self) -> Option<ChainId> {
        None
    }
}

const NOW: u64 = 1_800_000_000;
const CENT: u64 = 10_000;
const SERVER: &str = "https://market.example";

fn offer(cents: u64) -> Offer {
    Offer {
        network: Network::new(84532),
        asset: Address::repeat_byte(2),
        pay_to: Address::repeat_byte(1),
        amount: U256::from(cents * CENT),
        max_timeout_seconds: 300,
        token_name: "USDC".into(),
        token_version: "2".into(),
    }
}

fn ask_for(agent: &str, offer: &Offer) -> Ask {
    Ask {
        purchase: Purchase {
            server: SERVER.into(),
            agent_id: agent.into(),
            service_path: "translate".into(),
        },
        required: v2::PaymentRequired {
            x402_version: 2,
            error: None,
            resource: v2::ResourceInfo {
                url: format!("{SERVER}/{agent}/translate"),
                description: None,
                mime_type: None,
            },
            accepts: vec![v2::PaymentRequirements::for_offer(offer)],
            extensions: None,
        },
    }
}

fn ask(cents: u64) -> Ask {
    ask_for("7", &offer(cents))
}

/// $1 per payment, $5 an hour, $20 a day; no approvals or brakes unless a test turns them on.
fn plain_policy() -> Policy {
    let trust = agentripe_agent::policy::Trust {
        chain_id: 84532,
        escrow: Address::repeat_byte(1),
        asset: Address::repeat_byte(2),
        token_name: "USDC".into(),
        token_version: "2".into(),
        rpc_url: "http://127.0.0.1:1".into(),
    };
    let mut policy = Policy::parse(&Policy::template(&trust)).expect("the template parses");
    policy.approval.above = None;
    policy.brakes.burst = None;
    policy.brakes.new_agent = false;
    policy.brakes.balance_share_per_hour = None;
    policy
}

fn cents(amount: u64) -> Usdc {
    Usdc(U256::from(amount * CENT))
}

struct Harness {
    wallet: Wallet<CountingSigner>,
    signatures: Arc<AtomicUsize>,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A directory removed on drop.
    #[derive(Debug)]
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn harness(name: &str) -> Harness {
    let dir = std::env::temp_dir().join(format!("agentripe-wallet-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, Policy::template(&plain_policy().trust)).expect("policy");
    set_mode(&policy, 0o444);
    let signatures = Arc::new(AtomicUsize::new(0));
    let signer = CountingSigner { key: PrivateKeySigner::random(), signatures: signatures.clone() };
    let wallet = Wallet::open(&dir, signer).await.expect("the wallet opens");
    Harness { wallet, signatures, _dir: tempdir::Dir(dir) }
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

impl Harness {
    async fn decide(&self, policy: &Policy, ask: &Ask, now: u64, balance: Option<u64>) -> Decision {
        let context = Context { now, balance: balance.map(|cents| U256::from(cents * CENT)) };
        self.wallet.decide(policy, ask, context).await.expect("a decision")
    }

    fn signatures(&self) -> usize {
        self.signatures.load(Ordering::SeqCst)
    }

    /// Asserts `decision` refused by `rule`, and that nothing was signed or remembered as paid.
    async fn assert_refused(&self, decision: Decision, rule: Rule, signed_before: usize) {
        match decision {
            Decision::Refused(refusal) => assert_eq!(refusal.rule, rule, "{}", refusal.reason),
            other => panic!("expected a refusal by {rule:?}, got {other:?}"),
        }
        assert_eq!(self.signatures(), signed_before, "{rule:?}: the key signed");
        let payments = self.wallet.ledger().payments(100).await.expect("payments");
        assert_eq!(payments.len(), signed_before, "{rule:?}: a payment was remembered");
        let last = &self.wallet.ledger().events(10).await.expect("events");
        let refused = last.iter().find(|event| event.kind == "refused").expect("a refused line in the log");
        assert_eq!(refused.rule, rule.name());
    }
}

fn signed(decision: &Decision) -> bool {
    matches!(decision, Decision::Signed(_))
}

#[tokio::test]
async fn a_payment_within_every_limit_is_signed_and_logged() {
    let wallet = harness("within").await;
    let decision = wallet.decide(&plain_policy(), &ask(10), NOW, Some(1_000)).await;
    let Decision::Signed(signed) = decision else { panic!("expected a signature, got {decision:?}") };
    assert_eq!(signed.amount, U256::from(10 * CENT));
    assert_eq!(wallet.signatures(), 1);
    let payment = agentripe_x402::decode_header::<v2::PaymentPayload>(&signed.header).expect("a v2 payment");
    assert_eq!(payment.payload.authorization.to, Address::repeat_byte(1));
    assert_eq!(payment.payload.authorization.value, U256::from(10 * CENT));

    let log = wallet.wallet.ledger().events(10).await.expect("events");
    assert_eq!((log[0].kind.as_str(), log[0].rule.as_str()), ("signed", "within_policy"));
    assert_eq!(log[0].nonce.as_deref(), Some(signed.nonce.as_str()));
    assert_eq!(log[0].server.as_deref(), Some(SERVER));
    assert_eq!(log[0].agent_id.as_deref(), Some("7"));
    assert_eq!(wallet.wallet.ledger().payments(10).await.expect("payments")[0].nonce, signed.nonce);
}

#[tokio::test]
async fn terms_that_differ_from_the_pinned_trust_are_refused_before_signing() {
    let wallet = harness("trust").await;
    let policy = plain_policy();
    let cases = [
        (Offer { pay_to: Address::repeat_byte(9), ..offer(10) }, Rule::UntrustedEscrow),
        (Offer { asset: Address::repeat_byte(9), ..offer(10) }, Rule::UntrustedAsset),
        (Offer { network: Network::new(8453), ..offer(10) }, Rule::UntrustedChain),
        (Offer { token_name: "USD Coin".into(), ..offer(10) }, Rule::UntrustedTokenDomain),
        (Offer { token_version: "1".into(), ..offer(10) }, Rule::UntrustedTokenDomain),
        (Offer { max_timeout_seconds: 86_400, ..offer(10) }, Rule::UnusableTerms),
    ];
    for (offer, rule) in cases {
        let decision = wallet.decide(&policy, &ask_for("7", &offer), NOW, None).await;
        wallet.assert_refused(decision, rule, 0).await;
    }
    let mut unusable = ask(10);
    unusable.required.accepts[0].scheme = "upto".into();
    let decision = wallet.decide(&policy, &unusable, NOW, None).await;
    wallet.assert_refused(decision, Rule::UnusableTerms, 0).await;

    // A trusted offer among untrusted ones is the one paid.
    let mut mixed = ask_for("7", &Offer { pay_to: Address::repeat_byte(9), ..offer(10) });
    mixed.required.accepts.push(v2::PaymentRequirements::for_offer(&offer(10)));
    let Decision::Signed(signed) = wallet.decide(&policy, &mixed, NOW, None).await else { panic!("signs") };
    let payment = agentripe_x402::decode_header::<v2::PaymentPayload>(&signed.header).expect("v2");
    assert_eq!(payment.payload.authorization.to, Address::repeat_byte(1));
}

#[tokio::test]
async fn allow_and_deny_lists_refuse_before_signing() {
    let wallet = harness("lists").await;
    let mut policy = plain_policy();
    policy.servers.deny.insert(SERVER.into());
    // Entries name origins however they are written.
    let trailing = Policy::parse(&Policy::template(&policy.trust).replace(
        "[servers]\nallow = []\ndeny = []",
        "[servers]\nallow = []\ndeny = [\"https://market.example:443/\"]",
    ))
    .expect("parses");
    assert!(trailing.servers.deny.contains(SERVER), "{:?}", trailing.servers.deny);
    assert!(
        Policy::parse(
            &Policy::template(&policy.trust)
                .replace("[servers]\nallow = []", "[servers]\nallow = [\"market\"]")
        )
        .is_err()
    );
    let decision = wallet.decide(&policy, &ask(10), NOW, None).await;
    wallet.assert_refused(decision, Rule::ServerDenied, 0).await;

    let mut policy = plain_policy();
    policy.servers.allow.insert("https://other.example".into());
    let decision = wallet.decide(&policy, &ask(10), NOW, None).await;
    wallet.assert_refused(decision, Rule::ServerNotAllowed, 0).await;

    let mut policy = plain_policy();
    policy.agents.deny.insert("7".into());
    let decision = wallet.decide(&policy, &ask(10), NOW, None).await;
    wallet.assert_refused(decision, Rule::AgentDenied, 0).await;

    let mut policy = plain_policy();
    policy.agents.allow.insert("8".into());
    let decision = wallet.decide(&policy, &ask(10), NOW, None).await;
    wallet.assert_refused(decision, Rule::AgentNotAllowed, 0).await;
    assert!(signed(&wallet.decide(&policy, &ask_for("8", &offer(10)), NOW, None).await));
}

#[tokio::test]
async fn the_per_payment_cap_refuses_before_signing() {
    let wallet = harness("cap").await;
    let decision = wallet.decide(&plain_policy(), &ask(101), NOW, None).await;
    wallet.assert_refused(decision, Rule::PerPaymentCap, 0).await;
    assert!(signed(&wallet.decide(&plain_policy(), &ask(100), NOW, None).await), "the cap itself passes");
}

#[tokio::test]
async fn budgets_refuse_before_signing_and_roll() {
    let wallet = harness("budgets").await;
    let policy = plain_policy();
    // $5 an hour: five $1 payments, then the sixth is refused.
    for minute in 0..5 {
        assert!(signed(&wallet.decide(&policy, &ask(100), NOW + minute * 60, None).await));
    }
    let decision = wallet.decide(&policy, &ask(1), NOW + 600, None).await;
    wallet.assert_refused(decision, Rule::HourlyBudget, 5).await;
    // An hour after the first, it has left the window.
    assert!(signed(&wallet.decide(&policy, &ask(100), NOW + 3_600, None).await));
    assert!(!signed(&wallet.decide(&policy, &ask(100), NOW + 3_601, None).await), "the second is still in");
    assert!(signed(&wallet.decide(&policy, &ask(100), NOW + 3_661, None).await));

    // $20 a day: $7 so far; later hours fill the day, then the daily budget refuses until it rolls.
    let mut signed_count = 7;
    'hours: for hour in 1..4 {
        for minute in 0..5 {
            let decision = wallet.decide(&policy, &ask(100), NOW + hour * 3_600 + 4_000 + minute, None).await;
            if !signed(&decision) {
                wallet.assert_refused(decision, Rule::DailyBudget, signed_count).await;
                break 'hours;
            }
            signed_count += 1;
        }
    }
    assert_eq!(signed_count, 20);
    assert!(signed(&wallet.decide(&policy, &ask(100), NOW + 86_400 + 1, None).await));
}

#[tokio::test]
async fn a_payment_the_server_says_it_refused_still_counts() {
    // A server may answer "refused" and settle the authorization later: the signature is what counts.
    let wallet = harness("refused-counts").await;
    let policy = plain_policy();
    let mut nonces = Vec::new();
    for _ in 0..5 {
        let Decision::Signed(signed) = wallet.decide(&policy, &ask(100), NOW, None).await else { panic!() };
        nonces.push(signed.nonce);
    }
    wallet.wallet.ledger().settle_outcome(&nonces[0], "refused", None, NOW + 2).await.expect("noted");
    let decision = wallet.decide(&policy, &ask(100), NOW + 3, None).await;
    wallet.assert_refused(decision, Rule::HourlyBudget, 5).await;
}

#[tokio::test]
async fn payments_above_the_threshold_wait_for_a_person_and_approvals_are_single_use() {
    let wallet = harness("approval").await;
    let mut policy = plain_policy();
    policy.approval.above = Some(cents(50));
    let ledger = wallet.wallet.ledger();

    let Decision::Queued(queued) = wallet.decide(&policy, &ask(60), NOW, None).await else {
        panic!("queued")
    };
    assert_eq!(wallet.signatures(), 0);
    assert_eq!(queued.expires_at, NOW + 3_600);
    // Asking again does not queue it twice.
    let Decision::Queued(again) = wallet.decide(&policy, &ask(60), NOW + 1, None).await else { panic!() };
    assert_eq!(again.approval_id, queued.approval_id);
    assert_eq!(ledger.approvals(false, NOW + 1).await.expect("list").len(), 1);

    // Approved for $0.60 to agent 7: another amount or agent is not covered.
    ledger.decide_approval(queued.approval_id, true, "person", NOW + 2).await.expect("ok").expect("pending");
    assert!(matches!(wallet.decide(&policy, &ask(70), NOW + 3, None).await, Decision::Queued(_)));
    assert!(matches!(
        wallet.decide(&policy, &ask_for("8", &offer(60)), NOW + 3, None).await,
        Decision::Queued(_)
    ));
    assert_eq!(wallet.signatures(), 0);
    assert!(signed(&wallet.decide(&policy, &ask(60), NOW + 4, None).await));
    assert_eq!(wallet.signatures(), 1);
    // Used once: the same payment again waits for a person again.
    assert!(matches!(wallet.decide(&policy, &ask(60), NOW + 5, None).await, Decision::Queued(_)));
    assert_eq!(wallet.signatures(), 1);
    // An approval cannot be decided twice.
    assert!(
        ledger.decide_approval(queued.approval_id, false, "person", NOW + 6).await.expect("ok").is_none()
    );

    // Rejected, or expired, approvals sign nothing.
    let Decision::Queued(rejected) = wallet.decide(&policy, &ask(80), NOW + 10, None).await else { panic!() };
    ledger
        .decide_approval(rejected.approval_id, false, "person", NOW + 11)
        .await
        .expect("ok")
        .expect("pending");
    assert!(matches!(wallet.decide(&policy, &ask(80), NOW + 12, None).await, Decision::Queued(_)));
    let Decision::Queued(late) = wallet.decide(&policy, &ask(90), NOW + 20, None).await else { panic!() };
    assert!(
        ledger
            .decide_approval(late.approval_id, true, "person", NOW + 20 + 3_600)
            .await
            .expect("ok")
            .is_none()
    );
    assert_eq!(wallet.signatures(), 1);
    let kinds: Vec<String> =
        ledger.events(100).await.expect("log").into_iter().map(|event| event.kind).collect();
    assert!(kinds.contains(&"approved".to_string()) && kinds.contains(&"rejected".to_string()), "{kinds:?}");
}

#[tokio::test]
async fn a_burst_pauses_signing_until_a_person_resumes() {
    let wallet = harness("burst").await;
    let mut policy = plain_policy();
    policy.brakes.burst = Some(Burst { payments: 3, within_seconds: 60 });
    for second in 0..3 {
        assert!(signed(&wallet.decide(&policy, &ask(1), NOW + second, None).await));
    }
    let decision = wallet.decide(&policy, &ask(1), NOW + 3, None).await;
    wallet.assert_refused(decision, Rule::BurstBrake, 3).await;
    // Paused: even long after the burst, nothing is signed.
    let decision = wallet.decide(&policy, &ask(1), NOW + 86_400, None).await;
    wallet.assert_refused(decision, Rule::Paused, 3).await;

    let pause = wallet.wallet.ledger().resume("person", NOW + 86_401).await.expect("ok").expect("was paused");
    assert_eq!(pause.rule, Rule::BurstBrake.name());
    assert!(signed(&wallet.decide(&policy, &ask(1), NOW + 86_402, None).await));
    assert!(wallet.wallet.ledger().resume("person", NOW + 86_403).await.expect("ok").is_none(), "not paused");
}

#[tokio::test]
async fn a_first_payment_to_an_unknown_agent_pauses_until_a_person_resumes() {
    let wallet = harness("new-agent").await;
    let mut policy = plain_policy();
    policy.brakes.new_agent = true;
    let decision = wallet.decide(&policy, &ask(10), NOW, None).await;
    wallet.assert_refused(decision, Rule::NewAgentBrake, 0).await;
    let decision = wallet.decide(&policy, &ask_for("8", &offer(10)), NOW + 1, None).await;
    wallet.assert_refused(decision, Rule::Paused, 0).await;

    // Resuming acknowledges agent 7, not agent 8.
    wallet.wallet.ledger().resume("person", NOW + 2).await.expect("ok").expect("paused");
    assert!(signed(&wallet.decide(&policy, &ask(10), NOW + 3, None).await));
    assert!(signed(&wallet.decide(&policy, &ask(10), NOW + 4, None).await), "known now");
    let decision = wallet.decide(&policy, &ask_for("8", &offer(10)), NOW + 5, None).await;
    wallet.assert_refused(decision, Rule::NewAgentBrake, 2).await;

    // An agent a person allowed by name is known.
    wallet.wallet.ledger().resume("person", NOW + 6).await.expect("ok").expect("paused");
    policy.agents.allow = ["7".to_string(), "9".to_string()].into();
    assert!(signed(&wallet.decide(&policy, &ask_for("9", &offer(10)), NOW + 7, None).await));
}

#[tokio::test]
async fn spending_half_the_balance_within_an_hour_pauses() {
    let wallet = harness("balance").await;
    let mut policy = plain_policy();
    policy.brakes.balance_share_per_hour = Some(0.5);
    // $4 balance: $2 may go within the hour; the balance seen first stays the reference as it falls.
    assert!(signed(&wallet.decide(&policy, &ask(100), NOW, Some(400)).await));
    assert!(signed(&wallet.decide(&policy, &ask(100), NOW + 60, Some(300)).await));
    let decision = wallet.decide(&policy, &ask(1), NOW + 120, Some(200)).await;
    wallet.assert_refused(decision, Rule::BalanceBrake, 2).await;
    wallet.wallet.ledger().resume("person", NOW + 180).await.expect("ok").expect("paused");
    assert!(
        signed(&wallet.decide(&policy, &ask(100), NOW + 240, Some(200)).await),
        "counted from the resume"
    );

    // Without a balance the brake cannot judge, and refuses.
    let decision = wallet.decide(&policy, &ask(1), NOW + 300, None).await;
    wallet.assert_refused(decision, Rule::BalanceUnknown, 3).await;
}

#[tokio::test]
async fn two_payments_racing_for_the_last_of_a_budget_sign_once() {
    let wallet = Arc::new(harness("race").await);
    let mut policy = plain_policy();
    policy.limits.hourly = cents(100);
    policy.limits.per_payment = cents(100);
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let (wallet, policy) = (wallet.clone(), policy.clone());
            tokio::spawn(async move { signed(&wallet.decide(&policy, &ask(100), NOW, None).await) })
        })
        .collect();
    let mut signed_count = 0;
    for racer in racers {
        signed_count += usize::from(racer.await.expect("joins"));
    }
    assert_eq!((signed_count, wallet.signatures()), (1, 1));
}

#[tokio::test]
async fn the_audit_log_cannot_be_rewritten_and_the_policy_must_be_the_owners_alone() {
    let harness = harness("append-only").await;
    assert!(signed(&harness.decide(&plain_policy(), &ask(10), NOW, None).await));
    let path = harness._dir.0.join("ledger.sqlite");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display())).await.expect("opens");
    for statement in ["UPDATE events SET rule = 'x'", "DELETE FROM events"] {
        let error = sqlx::query(statement).execute(&pool).await.expect_err("refused");
        assert!(error.to_string().contains("append-only"), "{error}");
    }

    let policy = harness._dir.0.join("policy.toml");
    set_mode(&policy, 0o664);
    let error = harness.wallet.policy().expect_err("a group-writable policy is refused");
    assert!(error.to_string().contains("chmod 444"), "{error}");
    set_mode(&policy, 0o444);
    set_mode(&harness._dir.0, 0o777);
    let error = harness.wallet.policy().expect_err("a policy in a directory anyone may write is refused");
    assert!(error.to_string().contains("go-w"), "{error}");
    set_mode(&harness._dir.0, 0o755);

    // A symlink could be pointed elsewhere by whoever owns its target.
    let elsewhere = harness._dir.0.join("elsewhere.toml");
    std::fs::rename(&policy, &elsewhere).expect("move");
    std::os::unix::fs::symlink(&elsewhere, &policy).expect("symlink");
    assert!(harness.wallet.policy().is_err(), "a symlinked policy is refused");
}
