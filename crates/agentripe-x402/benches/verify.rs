//! What the server spends on a payment before it touches the chain: decode the `PAYMENT-SIGNATURE`
//! header (base64 + JSON) and verify it (terms + EIP-712 signature recovery).

use agentripe_x402::{Authorization, ExactEvmPayload, Network, Offer, PaymentPayload, encode_header, v2};
use alloy::{
    primitives::{Address, B256, U256},
    signers::{SignerSync, local::PrivateKeySigner},
};
use criterion::{Criterion, criterion_group, criterion_main};

const NOW: u64 = 1_700_000_000;

fn bench(c: &mut Criterion) {
    let offer = Offer {
        network: Network::new(84532),
        asset: Address::repeat_byte(0xaa),
        pay_to: Address::repeat_byte(0xee),
        amount: U256::from(100_000),
        max_timeout_seconds: 300,
        token_name: "USDC".into(),
        token_version: "2".into(),
    };
    let buyer = PrivateKeySigner::random();
    let authorization = Authorization {
        from: buyer.address(),
        to: offer.pay_to,
        value: offer.amount,
        valid_after: U256::ZERO,
        valid_before: U256::from(NOW + 120),
        nonce: B256::repeat_byte(7),
    };
    let message = authorization.message();
    let signature = buyer.sign_typed_data_sync(&message, &offer.token_domain()).expect("signs");
    let header = encode_header(&v2::PaymentPayload {
        x402_version: 2,
        resource: None,
        accepted: v2::PaymentRequirements::for_offer(&offer),
        payload: ExactEvmPayload { signature: signature.as_bytes().to_vec().into(), authorization },
        extensions: None,
    });

    c.bench_function("decode + verify (v2 header, EIP-712 recover)", |b| {
        b.iter(|| {
            let payment = PaymentPayload::from_header(2, std::hint::black_box(&header)).expect("decodes");
            payment.verify(&offer, NOW).expect("valid")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
