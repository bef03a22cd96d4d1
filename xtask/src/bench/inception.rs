//! InceptionV3 to mixed7: frozen-base forward and transfer training throughput.

/// Not built yet (issue 5).
pub fn run(_opts: &[String]) -> Result<(), String> {
    Err("not built yet (issue 5)".into())
}
