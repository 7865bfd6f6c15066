//! The bindings against the real contracts on a real anvil: deploy all four, take one purchase through
//! the escrow with an EIP-3009 payment signed here, and decode the escrow's custom errors.

use std::path::PathBuf;

use agentripe_chain::bindings::{
    Agentripe::{self, AgentripeErrors},
    DepositStatus, IERC8004Identity, IdentityRegistry, TestUSDC,
};
use agentripe_x402::Authorization;
use alloy::{
    node_bindings::{Anvil, AnvilInstance},
    primitives::{Address, B256, U256},
    providers::{Provider, ProviderBuilder},
    signers::{Signer, local::PrivateKeySigner},
    sol_types::eip712_domain,
};

const PRICE: u64 = 100_000;
const DEPOSIT_TIMEOUT: u64 = 7 * 24 * 3600;

fn anvil() -> AnvilInstance {
    let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../node_modules/.bin/anvil");
    assert!(binary.exists(), "anvil is installed by scripts/toolchain.sh (the build script runs it)");
    Anvil::at(binary).spawn()
}

fn key(anvil: &AnvilInstance, index: usize) -> PrivateKeySigner {
    PrivateKeySigner::from_signing_key(anvil.keys()[index].clone().into())
}

#[tokio::test]
async fn a_purchase_goes_through_the_escrow() {
    let anvil = anvil();
    let (operator, vendor, buyer) = (key(&anvil, 0), key(&anvil, 1), key(&anvil, 2));
    let url = anvil.endpoint_url();
    let as_operator = ProviderBuilder::new().wallet(operator.clone()).connect_http(url.clone());
    let as_vendor = ProviderBuilder::new().wallet(vendor.clone()).connect_http(url.clone());

    let usdc = TestUSDC::deploy(&as_operator, operator.address()).await.expect("deploy TestUSDC");
    let identity = IdentityRegistry::deploy(&as_operator).await.expect("deploy IdentityRegistry");
    let escrow = Agentripe::deploy(
        &as_operator,
        *usdc.address(),
        *identity.address(),
        operator.address(),
        operator.address(),
        U256::from(DEPOSIT_TIMEOUT),
    )
    .await
    .expect("deploy Agentripe");

    // The vendor registers through the official ERC-8004 surface, as it would on Base.
    let official_identity = IERC8004Identity::new(*identity.address(), &as_vendor);
    let receipt = official_identity
        .register_2("https://vendor.test/agent.json".into())
        .send()
        .await
        .expect("send register")
        .get_receipt()
        .await
        .expect("register mined");
    let registered = receipt.decoded_log::<IERC8004Identity::Registered>().expect("Registered event");
    let agent_id = registered.agentId;
    assert_eq!(registered.owner, vendor.address());

    usdc.mint(buyer.address(), U256::from(1_000_000u64))
        .send()
        .await
        .expect("send mint")
        .watch()
        .await
        .expect("mint mined");

    // The buyer signs a payment to the escrow over the token's EIP-712 domain.
    let chain_id = as_operator.get_chain_id().await.expect("chain id");
    let domain = eip712_domain! {
        name: "USDC",
        version: "2",
        chain_id: chain_id,
        verifying_contract: *usdc.address(),
    };
    let authorization = Authorization {
        from: buyer.address(),
        to: *escrow.address(),
        value: U256::from(PRICE),
        valid_after: U256::ZERO,
        valid_before: U256::from(u64::MAX),
        nonce: B256::repeat_byte(7),
    };
    let signature = buyer.sign_typed_data(&authorization.message(), &domain).await.expect("sign");

    // A facilitator settles it; the settlement hash becomes the deposit id.
    let settlement = usdc
        .transferWithAuthorization_0(
            authorization.from,
            authorization.to,
            authorization.value,
            authorization.valid_after,
            authorization.valid_before,
            authorization.nonce,
            signature.as_bytes().into(),
        )
        .send()
        .await
        .expect("send settlement")
        .get_receipt()
        .await
        .expect("settlement mined");
    assert!(settlement.status());
    let deposit_id = settlement.transaction_hash;
    assert!(usdc.authorizationState(buyer.address(), authorization.nonce).call().await.expect("state"));

    escrow
        .recordDeposit(deposit_id, agent_id, buyer.address(), U256::from(PRICE))
        .send()
        .await
        .expect("send record")
        .watch()
        .await
        .expect("record mined");
    let deposit = escrow.getDeposit(deposit_id).call().await.expect("getDeposit");
    assert_eq!(deposit.agentId, agent_id);
    assert_eq!(deposit.buyer, buyer.address());
    assert_eq!(deposit.amount, U256::from(PRICE));
    assert_eq!(DepositStatus::try_from(deposit.status), Ok(DepositStatus::Deposited));

    // Recording the same payment twice is refused, and the reason decodes to the escrow's custom error.
    let duplicate = escrow
        .recordDeposit(deposit_id, agent_id, buyer.address(), U256::from(PRICE))
        .call()
        .await
        .expect_err("a payment is recorded once");
    match duplicate.as_decoded_interface_error::<AgentripeErrors>() {
        Some(AgentripeErrors::DepositAlreadyRecorded(error)) => assert_eq!(error.depositId, deposit_id),
        other => panic!("expected DepositAlreadyRecorded, got {other:?} from {duplicate}"),
    }

    escrow
        .releaseToVendor(deposit_id)
        .send()
        .await
        .expect("send release")
        .watch()
        .await
        .expect("release mined");
    let deposit = escrow.getDeposit(deposit_id).call().await.expect("getDeposit");
    assert_eq!(DepositStatus::try_from(deposit.status), Ok(DepositStatus::Released));
    // Paid in the release itself: the vendor needs no transaction (and no ETH) to receive it.
    assert_eq!(escrow.withdrawableBalance(vendor.address()).call().await.expect("credit"), U256::ZERO);
    assert_eq!(usdc.balanceOf(vendor.address()).call().await.expect("balance"), U256::from(PRICE));
    assert_eq!(usdc.balanceOf(*escrow.address()).call().await.expect("balance"), U256::ZERO);
    assert_eq!(usdc.balanceOf(buyer.address()).call().await.expect("balance"), U256::from(1_000_000 - PRICE));
}

#[tokio::test]
async fn an_unbacked_deposit_is_refused_with_its_figures() {
    let anvil = anvil();
    let operator = key(&anvil, 0);
    let provider = ProviderBuilder::new().wallet(operator.clone()).connect_http(anvil.endpoint_url());
    let usdc = TestUSDC::deploy(&provider, operator.address()).await.expect("deploy TestUSDC");
    let identity = IdentityRegistry::deploy(&provider).await.expect("deploy IdentityRegistry");
    let escrow = Agentripe::deploy(
        &provider,
        *usdc.address(),
        *identity.address(),
        operator.address(),
        operator.address(),
        U256::from(DEPOSIT_TIMEOUT),
    )
    .await
    .expect("deploy Agentripe");
    identity.register_0().send().await.expect("send register").watch().await.expect("register mined");

    let error = escrow
        .recordDeposit(B256::repeat_byte(1), U256::from(1), Address::repeat_byte(9), U256::from(PRICE))
        .call()
        .await
        .expect_err("nothing was paid in");
    match error.as_decoded_interface_error::<AgentripeErrors>() {
        Some(AgentripeErrors::InsufficientBacking(shortfall)) => {
            assert_eq!(shortfall.balance, U256::ZERO);
            assert_eq!(shortfall.required, U256::from(PRICE));
        }
        other => panic!("expected InsufficientBacking, got {other:?} from {error}"),
    }
}
