//! Compiles the contracts with forge before the bindings are generated from its artifacts, so that a
//! changed contract can never leave stale bindings behind: foundry.toml stays the one place the compiler
//! settings live, and scripts/toolchain.sh the one place the toolchain is installed from.

use std::{env, path::PathBuf, process::Command};

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists");
    // The artifact too: a checkout whose out/ is gone (a cleaned or fresh tree next to a kept target
    // directory) rebuilds it instead of failing on the missing JSON.
    for watched in [
        "contracts/src",
        "foundry.toml",
        "package-lock.json",
        "scripts/toolchain.sh",
        "out/Agentripe.sol/Agentripe.json",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let status = Command::new("bash")
        .arg("-c")
        .arg(r#"source scripts/toolchain.sh && ensure_toolchain && forge build --root . contracts/src"#)
        .current_dir(&root)
        .status()
        .expect("bash must be available to build the contracts");
    assert!(
        status.success(),
        "`forge build` failed; the contract bindings cannot be generated (see the output above)"
    );

    // `sol!` reads the artifacts, but cargo does not know it does: rerunning this script alone would keep
    // the old bindings. A fingerprint of the artifacts in the crate's environment makes any change to
    // them recompile the bindings.
    let mut fingerprint = std::collections::hash_map::DefaultHasher::new();
    for contract in BOUND {
        let artifact = root.join(format!("out/{contract}.sol/{contract}.json"));
        let bytes = std::fs::read(&artifact)
            .unwrap_or_else(|error| panic!("forge wrote no {}: {error}", artifact.display()));
        std::hash::Hash::hash(&bytes, &mut fingerprint);
    }
    println!("cargo:rustc-env=AGENTRIPE_ARTIFACTS_FINGERPRINT={:x}", std::hash::Hasher::finish(&fingerprint));
}

/// The contracts `src/bindings.rs` binds.
const BOUND: [&str; 7] = [
    "Agentripe",
    "IdentityRegistry",
    "ReputationRegistry",
    "TestUSDC",
    "IERC3009",
    "IERC8004Identity",
    "IERC8004Reputation",
];
