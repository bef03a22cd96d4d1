//! `cargo xtask fetch-weights`.

/// Not built yet (issue 5).
pub fn run(_args: &[String]) -> Result<(), String> {
    Err("not built yet (issue 5)".into())
}
