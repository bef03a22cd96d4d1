//! `cargo xtask fetch-data`.

/// Not built yet (issue 4).
pub fn run(_args: &[String]) -> Result<(), String> {
    Err("not built yet (issue 4)".into())
}
