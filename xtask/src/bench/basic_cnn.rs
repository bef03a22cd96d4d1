//! The basic Cats-vs-Dogs CNN: training and predict throughput, peak memory.

/// Not built yet (issue 7).
pub fn run(_opts: &[String]) -> Result<(), String> {
    Err("not built yet (issue 7)".into())
}
