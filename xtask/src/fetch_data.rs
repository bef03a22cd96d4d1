//! `cargo xtask fetch-data`: the mission's Cats-vs-Dogs images
//! (`cats_and_dogs_filtered.zip`, 2000 training and 1000 validation JPEGs)
//! into `data/cats_and_dogs_filtered/`.
//!
//! The archive is downloaded (or taken from `--from FILE`), every entry is
//! read through its CRC check, names that would escape the target folder
//! and links are refused, the four class folders must hold the expected
//! counts, and only then is the extracted tree renamed into place: an
//! interrupted or failed run leaves no half-filled folder behind. A second
//! run finds the folder complete and does nothing.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::download;

/// Where Google hosts the archive the mission's notebooks use.
pub const URL: &str = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip";
/// The folder the archive holds, and the one created under `--dir`.
pub const NAME: &str = "cats_and_dogs_filtered";
/// Images expected in each class folder.
pub const EXPECTED: [(&str, usize); 4] = [
    ("train/cats", 1000),
    ("train/dogs", 1000),
    ("validation/cats", 500),
    ("validation/dogs", 500),
];
/// A ceiling on what the archive may unpack to (the real one: ~68 MB).
const MAX_UNPACKED: u64 = 2 << 30;

const HELP: &str = "usage: cargo xtask fetch-data [--dir DIR] [--url URL | --from FILE.zip]

Downloads the Cats-vs-Dogs images the mission uses (train 1000+1000,
validation 500+500 JPEGs) and unpacks them into DIR/cats_and_dogs_filtered
(DIR defaults to data). Does nothing when that folder is already complete.

  --dir DIR        where to put the images (default: data)
  --url URL        download from URL instead of Google's storage (http(s)://
                   or file://)
  --from FILE.zip  use an archive already on disk; no download";

struct Options {
    dir: PathBuf,
    url: String,
    from: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut o = Options {
        dir: PathBuf::from("data"),
        url: URL.to_string(),
        from: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n\n{HELP}"))
        };
        match a.as_str() {
            "--dir" => o.dir = PathBuf::from(value("--dir")?),
            "--url" => o.url = value("--url")?,
            "--from" => o.from = Some(PathBuf::from(value("--from")?)),
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(None);
            }
            other => return Err(format!("unknown option `{other}`\n\n{HELP}")),
        }
    }
    Ok(Some(o))
}

/// Run `cargo xtask fetch-data`.
pub fn run(args: &[String]) -> Result<(), String> {
    let Some(o) = parse(args)? else {
        return Ok(());
    };
    let target = o.dir.join(NAME);
    if target.exists() {
        let counts = count_images(&target)?;
        if mismatches(&counts).is_empty() {
            println!(
                "{} already holds the Cats-vs-Dogs images (train 1000+1000, validation 500+500): nothing to do",
                target.display()
            );
            return Ok(());
        }
        return Err(format!(
            "{} exists but is not a complete copy ({}); move it away and run again",
            target.display(),
            mismatches(&counts).join(", ")
        ));
    }
    fs::create_dir_all(&o.dir).map_err(|e| format!("cannot create {}: {e}", o.dir.display()))?;
    let (archive, downloaded) = match &o.from {
        Some(p) => (p.clone(), false),
        None => {
            let z = o.dir.join(format!("{NAME}.zip"));
            if z.exists() {
                println!("using the archive already downloaded, {}", z.display());
                (z, false)
            } else {
                println!("downloading {} to {}", o.url, z.display());
                download::fetch(&o.url, &z, None)?;
                (z, true)
            }
        }
    };
    match extract(&archive, &o.dir) {
        Ok(()) => {
            println!(
                "{}: train 1000 cats + 1000 dogs, validation 500 cats + 500 dogs",
                target.display()
            );
            if o.from.is_none() {
                println!(
                    "(the archive stays at {}; delete it to save 66 MB)",
                    archive.display()
                );
            }
            Ok(())
        }
        Err(e) if o.from.is_none() && !downloaded => Err(format!(
            "{e}\nthe archive {} from an earlier run is bad: delete it and run again",
            archive.display()
        )),
        Err(e) => Err(e),
    }
}

/// Unpack `archive` into `dir/NAME` by way of a temporary folder in `dir`.
pub fn extract(archive: &Path, dir: &Path) -> Result<(), String> {
    let file =
        File::open(archive).map_err(|e| format!("cannot open {}: {e}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| format!("{} is not a readable zip archive: {e}", archive.display()))?;
    let tmp = dir.join(format!(".{NAME}.partial"));
    if tmp.exists() {
        // Left by an interrupted run of ours: never a user's folder.
        fs::remove_dir_all(&tmp).map_err(|e| format!("cannot remove {}: {e}", tmp.display()))?;
    }
    let result = unpack(&mut zip, archive, &tmp).and_then(|()| {
        let counts = count_images(&tmp.join(NAME))?;
        let bad = mismatches(&counts);
        if bad.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}: unexpected image counts: {}",
                archive.display(),
                bad.join(", ")
            ))
        }
    });
    let result = result.and_then(|()| {
        let target = dir.join(NAME);
        fs::rename(tmp.join(NAME), &target).map_err(|e| {
            format!(
                "cannot move the unpacked images to {}: {e}",
                target.display()
            )
        })
    });
    let _ = fs::remove_dir_all(&tmp);
    result
}

fn unpack(zip: &mut zip::ZipArchive<File>, archive: &Path, tmp: &Path) -> Result<(), String> {
    let at = |name: &str, e: &dyn std::fmt::Display| {
        format!("{}: entry `{name}`: {e}", archive.display())
    };
    let mut unpacked = 0u64;
    let mut outside = 0usize;
    fs::create_dir_all(tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| format!("{}: entry {i}: {e}", archive.display()))?;
        let name = entry.name().to_string();
        let Some(rel) = entry.enclosed_name() else {
            return Err(at(&name, &"its path escapes the target folder; refused"));
        };
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(at(&name, &"its path escapes the target folder; refused"));
        }
        if entry.is_symlink() {
            return Err(at(&name, &"links are refused"));
        }
        if !rel.starts_with(NAME) {
            outside += 1;
            continue;
        }
        let out = tmp.join(&rel);
        if entry.is_dir() {
            fs::create_dir_all(&out).map_err(|e| at(&name, &e))?;
            continue;
        }
        unpacked += entry.size();
        if unpacked > MAX_UNPACKED {
            return Err(at(
                &name,
                &format!("the archive unpacks to more than {MAX_UNPACKED} bytes; refused"),
            ));
        }
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).map_err(|e| at(&name, &e))?;
        }
        let mut f = File::create(&out).map_err(|e| at(&name, &e))?;
        // Reading to the end checks the entry's CRC.
        let copied = io::copy(&mut entry, &mut f).map_err(|e| at(&name, &e))?;
        if copied != entry.size() {
            return Err(at(
                &name,
                &format!("holds {copied} bytes, its header says {}", entry.size()),
            ));
        }
    }
    if outside > 0 {
        println!("skipped {outside} archive entries outside {NAME}/");
    }
    Ok(())
}

/// Image files in each expected class folder of `root` (a missing folder
/// counts 0).
pub fn count_images(root: &Path) -> Result<BTreeMap<&'static str, usize>, String> {
    let mut counts = BTreeMap::new();
    for (sub, _) in EXPECTED {
        let dir = root.join(sub);
        let n = match fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter(|e| {
                    let p = e.path();
                    p.is_file()
                        && p.extension()
                            .and_then(|x| x.to_str())
                            .is_some_and(|x| x.eq_ignore_ascii_case("jpg"))
                })
                .count(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
        };
        counts.insert(sub, n);
    }
    Ok(counts)
}

/// `"train/cats: 999 images, expected 1000"` for each folder that is off.
fn mismatches(counts: &BTreeMap<&'static str, usize>) -> Vec<String> {
    EXPECTED
        .iter()
        .filter(|(sub, n)| counts.get(sub) != Some(n))
        .map(|(sub, n)| {
            format!(
                "{sub}: {} images, expected {n}",
                counts.get(sub).copied().unwrap_or(0)
            )
        })
        .collect()
}
