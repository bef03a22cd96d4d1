//! A coarse time profile of training steps, for developers: set
//! `CONVNET_PROFILE=1` and every timed section (each layer's forward pass in
//! `convnet-nn`, each backward rule of the tape) adds its wall time under its
//! name; [`report`] returns the table, largest first. Off by default, and
//! then a timed section costs one relaxed atomic load.
//!
//! ```
//! let x = convnet_autograd::profile::timed("example", || 1 + 1);
//! assert_eq!(x, 2);
//! print!("{}", convnet_autograd::profile::report());
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// 0 = not read yet, 1 = off, 2 = on.
static STATE: AtomicU8 = AtomicU8::new(0);
static TOTALS: Mutex<Option<HashMap<String, (f64, u64)>>> = Mutex::new(None);

/// Whether profiling is on (`CONVNET_PROFILE` set to anything but `0` or empty).
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let on = std::env::var("CONVNET_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0");
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
    }
}

/// Turn profiling on or off from code (tests, tools), whatever
/// `CONVNET_PROFILE` says.
pub fn set_enabled(on: bool) {
    STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Run `f`, adding its wall time under `name` when profiling is on.
pub fn timed<T>(name: &str, f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    let t = Instant::now();
    let out = f();
    add(name, t.elapsed().as_secs_f64());
    out
}

/// Add `secs` under `name` (when profiling is on).
pub fn add(name: &str, secs: f64) {
    if !enabled() {
        return;
    }
    if let Ok(mut guard) = TOTALS.lock() {
        let e = guard
            .get_or_insert_with(HashMap::new)
            .entry(name.to_string())
            .or_insert((0.0, 0));
        e.0 += secs;
        e.1 += 1;
    }
}

/// The profile so far as a text table (seconds, calls, milliseconds per
/// call, share), largest first; empty when nothing was timed.
pub fn report() -> String {
    let Ok(guard) = TOTALS.lock() else {
        return String::new();
    };
    let Some(map) = guard.as_ref() else {
        return String::new();
    };
    let mut rows: Vec<_> = map.iter().collect();
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    let total: f64 = rows.iter().map(|r| r.1 .0).sum();
    let mut out = format!(
        "{:<40} {:>9} {:>7} {:>10} {:>6}\n",
        "section", "seconds", "calls", "ms/call", "share"
    );
    for (name, (secs, calls)) in rows {
        out += &format!(
            "{:<40} {:>9.3} {:>7} {:>10.3} {:>5.1}%\n",
            name,
            secs,
            calls,
            secs * 1e3 / *calls as f64,
            100.0 * secs / total.max(1e-12)
        );
    }
    out
}

/// Forget everything timed so far.
pub fn reset() {
    if let Ok(mut guard) = TOTALS.lock() {
        *guard = None;
    }
}
