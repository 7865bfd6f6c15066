//! What the server spends on a payment before it touches the chain: decode the `PAYMENT-SIGNATURE`
//! header (base64 + JSON) and verify it (terms + EIP-712 signature recovery).

use agentripe_x402::{Network, Offer, PaymentPayload, Version, client, encode_header, v2};
use alloy::{
    primitives::{Address, U256},
    signers::local::PrivateKeySigner,
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
    let accepted = v2::PaymentRequirements::for_offer(&offer);
    let header = encode_header(&client::pay(&buyer, &accepted, None, NOW).expect("signs"));

    c.bench_function("decode + verify (v2 header, EIP-712 recover)", |b| {
        b.iter(|| {
            let payment =
                PaymentPayload::decode(Version::V2, std::hint::black_box(&header)).expect("decodes");
            payment.verify(&offer, NOW).expect("valid")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
