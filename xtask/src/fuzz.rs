//! `cargo xtask fuzz [--time SECONDS] [target...]`: runs the cargo-fuzz
//! targets of `fuzz/` (safetensors, idx, image) one after the other, each
//! for the given time (default 600 s), with libFuzzer. Needs a nightly
//! toolchain (`rustup toolchain install nightly`) and cargo-fuzz
//! (`cargo install cargo-fuzz`). Inputs that crash land in
//! `fuzz/artifacts/<target>/`; each one found becomes a regression test of
//! the crate it broke.

use std::path::Path;
use std::process::Command;

/// The targets, as named in `fuzz/Cargo.toml`.
pub const TARGETS: &[&str] = &["safetensors", "idx", "image", "keras_h5"];

pub fn run(args: &[String]) -> Result<(), String> {
    let mut secs: u64 = 600;
    let mut chosen: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--time" => {
                secs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--time needs a number of seconds")?;
            }
            t => match TARGETS.iter().find(|&&k| k == t) {
                Some(k) => chosen.push(k),
                None => {
                    return Err(format!(
                        "unknown fuzz target `{t}` (targets: {})",
                        TARGETS.join(", ")
                    ))
                }
            },
        }
    }
    if chosen.is_empty() {
        chosen = TARGETS.to_vec();
    }
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    for target in chosen {
        println!("fuzz {target}: {secs} s");
        let status = Command::new("cargo")
            .current_dir(&fuzz_dir)
            .args(["+nightly", "fuzz", "run", target, "--"])
            .arg(format!("-max_total_time={secs}"))
            .status()
            .map_err(|e| {
                format!("could not run cargo +nightly fuzz (cargo install cargo-fuzz): {e}")
            })?;
        if !status.success() {
            return Err(format!(
                "fuzz target `{target}` failed ({status}); the crashing input is under fuzz/artifacts/{target}/"
            ));
        }
        println!("fuzz {target}: no crash in {secs} s");
    }
    Ok(())
}
