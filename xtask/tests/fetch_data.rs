//! `cargo xtask fetch-data` on archives built here (the internet is closed
//! to tests): extraction, idempotence, `file://` downloads, and refusal of
//! archives that escape the folder, have wrong counts, or are corrupt.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

const NAME: &str = "cats_and_dogs_filtered";

/// Builds a zip in the layout of the real archive: `counts` images per
/// class folder (tiny fake JPEG bytes), plus `vectorize.py` and `extra`
/// entries `(name, bytes)`.
fn make_zip(path: &Path, counts: [usize; 4], extra: &[(&str, &[u8])]) {
    let file = fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    let deflated = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    zip.add_directory(format!("{NAME}/"), stored).unwrap();
    zip.start_file(format!("{NAME}/vectorize.py"), deflated)
        .unwrap();
    zip.write_all(b"print('hello')\n").unwrap();
    let folders = [
        "train/cats",
        "train/dogs",
        "validation/cats",
        "validation/dogs",
    ];
    for (folder, n) in folders.iter().zip(counts) {
        zip.add_directory(format!("{NAME}/{folder}/"), stored)
            .unwrap();
        let animal = if folder.ends_with("cats") {
            "cat"
        } else {
            "dog"
        };
        for i in 0..n {
            zip.start_file(format!("{NAME}/{folder}/{animal}.{i}.jpg"), stored)
                .unwrap();
            zip.write_all(format!("\u{ff}\u{d8} image {folder} {i}").as_bytes())
                .unwrap();
        }
    }
    for (name, bytes) in extra {
        zip.start_file(*name, stored).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("fetch-data")
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Nothing but the archive (and no leftover temporary folder) in `dir`.
fn assert_untouched(dir: &Path) {
    let names: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_none_or(|x| x != "zip"))
        .collect();
    assert!(names.is_empty(), "left behind: {names:?}");
}

#[test]
fn extracts_a_good_archive_once() {
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("a.zip");
    make_zip(&archive, [1000, 1000, 500, 500], &[]);
    let data = t.path().join("data");
    let o = xtask(&[
        "--from",
        archive.to_str().unwrap(),
        "--dir",
        data.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let root = data.join(NAME);
    assert_eq!(count(&root.join("train/cats")), 1000);
    assert_eq!(count(&root.join("train/dogs")), 1000);
    assert_eq!(count(&root.join("validation/cats")), 500);
    assert_eq!(count(&root.join("validation/dogs")), 500);
    assert_eq!(
        fs::read(root.join("train/dogs/dog.7.jpg")).unwrap(),
        "\u{ff}\u{d8} image train/dogs 7".as_bytes()
    );
    assert!(root.join("vectorize.py").is_file());
    // Only the final folder: no temporary one left.
    assert_eq!(
        count(&data),
        1,
        "{:?}",
        fs::read_dir(&data).unwrap().collect::<Vec<_>>()
    );

    // Idempotent: a second run does nothing, even without the archive.
    fs::remove_file(&archive).unwrap();
    let o = xtask(&[
        "--from",
        archive.to_str().unwrap(),
        "--dir",
        data.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("nothing to do"), "{}", text(&o));
}

#[test]
fn downloads_from_a_url_then_extracts() {
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("served.zip");
    make_zip(&archive, [1000, 1000, 500, 500], &[]);
    let url = format!("file://{}", archive.display());
    let data = t.path().join("data");
    let o = xtask(&["--url", &url, "--dir", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(count(&data.join(NAME).join("validation/cats")), 500);
    // The download is kept, complete, under its final name only.
    assert_eq!(
        fs::read(data.join(format!("{NAME}.zip"))).unwrap(),
        fs::read(&archive).unwrap()
    );
    assert!(!data.join(format!("{NAME}.zip.part")).exists());
}

#[test]
fn refuses_entries_that_escape_the_folder() {
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("evil.zip");
    make_zip(
        &archive,
        [1000, 1000, 500, 500],
        &[("cats_and_dogs_filtered/../../evil.txt", b"gotcha")],
    );
    let data = t.path().join("data");
    let o = xtask(&[
        "--from",
        archive.to_str().unwrap(),
        "--dir",
        data.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("escapes the target folder"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("evil.txt"), "{}", text(&o));
    assert!(!t.path().join("evil.txt").exists());
    assert_untouched(&data);
}

#[test]
fn refuses_wrong_counts_naming_the_folder() {
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("short.zip");
    make_zip(&archive, [1000, 999, 500, 500], &[]);
    let data = t.path().join("data");
    let o = xtask(&[
        "--from",
        archive.to_str().unwrap(),
        "--dir",
        data.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("train/dogs: 999 images, expected 1000"),
        "{}",
        text(&o)
    );
    assert_untouched(&data);
}

#[test]
fn refuses_corrupt_and_truncated_archives() {
    let t = tempfile::tempdir().unwrap();
    let good = t.path().join("good.zip");
    make_zip(&good, [1000, 1000, 500, 500], &[]);
    let bytes = fs::read(&good).unwrap();

    // One byte of a stored image changed: its CRC no longer matches.
    let needle = b"image train/cats 3";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    let mut corrupt = bytes.clone();
    corrupt[at] ^= 0x20;
    let path = t.path().join("corrupt.zip");
    fs::write(&path, &corrupt).unwrap();
    let data = t.path().join("data1");
    let o = xtask(&[
        "--from",
        path.to_str().unwrap(),
        "--dir",
        data.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("cat.3.jpg"), "{}", text(&o));
    assert_untouched(&data);

    // Cut short (as an interrupted download would be): no central directory.
    let path = t.path().join("truncated.zip");
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let data = t.path().join("data2");
    let o = xtask(&[
        "--from",
        path.to_str().unwrap(),
        "--dir",
        data.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("not a readable zip archive"),
        "{}",
        text(&o)
    );
    assert_untouched(&data);
}

#[test]
fn an_incomplete_folder_is_reported_not_overwritten() {
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("a.zip");
    make_zip(&archive, [1000, 1000, 500, 500], &[]);
    let data = t.path().join("data");
    let mine = data.join(NAME).join("train/cats/mine.jpg");
    fs::create_dir_all(mine.parent().unwrap()).unwrap();
    fs::write(&mine, b"a user's file").unwrap();
    let o = xtask(&[
        "--from",
        archive.to_str().unwrap(),
        "--dir",
        data.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("not a complete copy"), "{}", text(&o));
    assert_eq!(fs::read(&mine).unwrap(), b"a user's file");
}
