//! Image-folder throughput: decode + augment + batch, images/s.

/// Not built yet (issue 4).
pub fn run(_opts: &[String]) -> Result<(), String> {
    Err("not built yet (issue 4)".into())
}
