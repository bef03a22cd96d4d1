//! `cargo xtask bench [target...]`: quick benchmarks that print one line per
//! figure (`<name>: <value> <unit>`), each the median of several timed
//! repetitions after a warm-up. Not a substitute for the criterion benches,
//! just a fast way to see where a change lands.

mod conv;

use std::time::Instant;

/// A benchmark target: its name on the command line and what runs it.
struct Target {
    name: &'static str,
    run: fn(),
}

/// Every target, in the order `cargo xtask bench` runs them. Add
/// `basic_cnn`, `inception`, ... here.
const TARGETS: &[Target] = &[Target {
    name: "conv",
    run: conv::run,
}];

/// Names of the available targets.
pub fn target_names() -> Vec<&'static str> {
    TARGETS.iter().map(|t| t.name).collect()
}

/// Run the named targets (all of them when `names` is empty).
pub fn run(names: &[String]) -> Result<(), String> {
    let mut chosen = Vec::new();
    for name in names {
        match TARGETS.iter().find(|t| t.name == name) {
            Some(t) => chosen.push(t),
            None => return Err(format!("unknown target `{name}`")),
        }
    }
    if chosen.is_empty() {
        chosen = TARGETS.iter().collect();
    }
    for t in chosen {
        (t.run)();
    }
    Ok(())
}

/// Median wall time in seconds of `reps` calls of `f`, after `warmup` calls.
pub fn median_secs(warmup: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Deterministic pseudo-random values in `[-1, 1)` (no RNG dependency).
pub fn fill(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}
