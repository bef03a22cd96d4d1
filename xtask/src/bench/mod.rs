//! `cargo xtask bench [target...]`: quick benchmarks that print one line per
//! figure (`<name>: <value> <unit>`), each the median of several timed
//! repetitions after a warm-up. Not a substitute for the criterion benches,
//! just a fast way to see where a change lands.

mod augmented;
mod basic_cnn;
mod conv;
mod data;
mod half;
mod inception;
mod keras;

use std::time::Instant;

/// A benchmark target: its name on the command line and what runs it with
/// the options that follow the name (`bench data --dir DIR`).
struct Target {
    name: &'static str,
    run: fn(&[String]) -> Result<(), String>,
}

/// Every target, in the order `cargo xtask bench` runs them.
const TARGETS: &[Target] = &[
    Target {
        name: "conv",
        run: conv::run,
    },
    Target {
        name: "basic_cnn",
        run: basic_cnn::run,
    },
    Target {
        name: "inception",
        run: inception::run,
    },
    Target {
        name: "data",
        run: data::run,
    },
    Target {
        name: "half",
        run: half::run,
    },
    Target {
        name: "augmented",
        run: augmented::run,
    },
];

/// Options that take a value (the next argument).
const VALUE_OPTIONS: &[&str] = &["--dir", "--data", "--epochs"];

/// Targets with a Keras counterpart in `benches/keras/bench.py`.
const KERAS_TARGETS: &[&str] = &["basic_cnn", "inception", "augmented"];

/// Names of the available targets.
pub fn target_names() -> Vec<&'static str> {
    TARGETS.iter().map(|t| t.name).collect()
}

/// Run the named targets (all of them when none is named). Arguments that
/// start with `-` after a target's name are that target's options.
pub fn run(args: &[String]) -> Result<(), String> {
    let (against_keras, rounds, rest) = keras_options(args)?;
    let chosen = choose(&rest)?;
    if against_keras {
        return keras::against_keras(
            &chosen
                .iter()
                .filter(|(t, _)| KERAS_TARGETS.contains(&t.name))
                .map(|(t, o)| (t.name, o.clone()))
                .collect::<Vec<_>>(),
            rounds.unwrap_or(keras::ROUNDS),
        );
    }
    for (t, opts) in chosen {
        (t.run)(&opts).map_err(|e| format!("{}: {e}", t.name))?;
    }
    Ok(())
}

/// `--against-keras` and `--rounds N` (anywhere in `args`), and the other
/// arguments in order.
fn keras_options(args: &[String]) -> Result<(bool, Option<usize>, Vec<String>), String> {
    let (mut against_keras, mut rounds, mut rest) = (false, None, Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--against-keras" => against_keras = true,
            "--rounds" => {
                let n = it
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|&n| n > 0)
                    .ok_or("--rounds needs a positive number")?;
                rounds = Some(n);
            }
            _ => rest.push(a.clone()),
        }
    }
    if rounds.is_some() && !against_keras {
        return Err("--rounds goes with --against-keras".into());
    }
    Ok((against_keras, rounds, rest))
}

/// The targets named in `args` with their options (every target but
/// `half` when none is named).
fn choose(args: &[String]) -> Result<Vec<(&'static Target, Vec<String>)>, String> {
    let mut chosen: Vec<(&Target, Vec<String>)> = Vec::new();
    for arg in args {
        if arg.starts_with('-') {
            match chosen.last_mut() {
                Some((_, opts)) => opts.push(arg.clone()),
                None => return Err(format!("option `{arg}` before any target")),
            }
            continue;
        }
        // An option's value (`--dir DIR`) follows its option; flags
        // (`--half`, `--forward`) take none.
        if let Some((_, opts)) = chosen.last_mut() {
            if opts
                .last()
                .is_some_and(|o| VALUE_OPTIONS.contains(&o.as_str()))
            {
                opts.push(arg.clone());
                continue;
            }
        }
        match TARGETS.iter().find(|t| t.name == arg) {
            Some(t) => chosen.push((t, Vec::new())),
            None => return Err(format!("unknown target `{arg}`")),
        }
    }
    if chosen.is_empty() {
        // `half` trains a network for a minute or two and needs
        // Fashion-MNIST: only when named.
        chosen = TARGETS
            .iter()
            .filter(|t| t.name != "half")
            .map(|t| (t, Vec::new()))
            .collect();
    }
    Ok(chosen)
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

#[cfg(test)]
mod tests {
    use super::choose;

    fn names(args: &[&str]) -> Vec<(String, Vec<String>)> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        choose(&args)
            .unwrap()
            .into_iter()
            .map(|(t, o)| (t.name.to_string(), o))
            .collect()
    }

    #[test]
    fn rounds_go_with_against_keras() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (k, r, rest) =
            super::keras_options(&args(&["--against-keras", "--rounds", "6", "inception"]))
                .unwrap();
        assert!(k);
        assert_eq!(r, Some(6));
        assert_eq!(rest, args(&["inception"]));
        let (k, r, rest) = super::keras_options(&args(&["inception", "--half"])).unwrap();
        assert!(!k && r.is_none());
        assert_eq!(rest, args(&["inception", "--half"]));
        for bad in [
            &["--rounds", "3", "inception"][..],
            &["--against-keras", "--rounds", "0"],
            &["--against-keras", "--rounds", "x"],
            &["--against-keras", "--rounds"],
        ] {
            assert!(super::keras_options(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_take_no_value_and_value_options_take_one() {
        let got = names(&[
            "inception",
            "--half",
            "augmented",
            "data",
            "--dir",
            "x",
            "conv",
        ]);
        let want: Vec<(String, Vec<String>)> = vec![
            ("inception".into(), vec!["--half".into()]),
            ("augmented".into(), vec![]),
            ("data".into(), vec!["--dir".into(), "x".into()]),
            ("conv".into(), vec![]),
        ];
        assert_eq!(got, want);
        let all = names(&[]);
        assert!(all.iter().all(|(n, _)| n != "half") && all.len() == super::TARGETS.len() - 1);
        let args = vec!["--half".to_string()];
        assert!(choose(&args).is_err());
        let args = vec!["nope".to_string()];
        assert!(choose(&args).is_err());
    }
}
