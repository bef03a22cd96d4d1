//! Sets `cfg(avx512_intrinsics)` when the compiler has stable AVX-512
//! intrinsics and `target_feature(enable = "avx512f")` (Rust 1.89): the
//! direct convolution kernels then get an AVX-512 build, chosen at run
//! time. Older compilers (down to the workspace's `rust-version`) build
//! without it.

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(avx512_intrinsics)");
    println!("cargo::rerun-if-env-changed=RUSTC");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let minor = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| {
            v.split_whitespace()
                .nth(1)?
                .split('.')
                .nth(1)?
                .parse::<u32>()
                .ok()
        });
    if minor.is_some_and(|m| m >= 89) {
        println!("cargo::rustc-cfg=avx512_intrinsics");
    }
}
