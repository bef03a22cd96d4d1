//! Downloads for `fetch-data` and `fetch-weights`: one HTTP GET (ureq) or a
//! local `file://` URL, streamed to `DEST.part` with a progress bar and an
//! MD5 digest computed on the way, then fsynced and renamed into place, so
//! an interrupted download never leaves a file that looks finished.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};

/// `path` with `.part` appended to its file name.
pub fn part_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    path.with_file_name(name)
}

/// A readable body and its length when known.
fn open(url: &str) -> Result<(Box<dyn Read>, Option<u64>), String> {
    if let Some(path) = url.strip_prefix("file://") {
        let file = File::open(path).map_err(|e| format!("cannot open {url}: {e}"))?;
        let len = file.metadata().ok().map(|m| m.len());
        return Ok((Box::new(file), len));
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(format!(
            "unsupported URL `{url}` (expected https://, http:// or file://)"
        ));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_body(Some(Duration::from_secs(120)))
        .build()
        .into();
    let response = agent
        .get(url)
        .call()
        .map_err(|e| format!("download of {url} failed: {e}"))?;
    let len = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let reader = response.into_body().into_reader();
    Ok((Box::new(reader), len))
}

/// Download `url` to `dest` (parent folders created) and return the MD5 of
/// what was written, as lowercase hex. When `expected_md5` is given and the
/// digest differs, the partial file is removed and nothing is renamed into
/// place.
pub fn fetch(url: &str, dest: &Path, expected_md5: Option<&str>) -> Result<String, String> {
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let (mut body, len) = open(url)?;
    let part = part_path(dest);
    let result = (|| {
        let mut out =
            File::create(&part).map_err(|e| format!("cannot create {}: {e}", part.display()))?;
        let bar = match len {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .map_err(|e| e.to_string())?
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{msg} {spinner} {bytes} {bytes_per_sec}")
                    .map_err(|e| e.to_string())?,
            ),
        };
        bar.set_message(
            dest.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let mut md5 = Md5::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("download of {url} failed after {total} bytes: {e}")),
            };
            md5.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
            total += n as u64;
            bar.set_position(total);
        }
        bar.finish_and_clear();
        if let Some(n) = len.filter(|&n| n != total) {
            return Err(format!(
                "download of {url} ended after {total} of {n} bytes"
            ));
        }
        out.sync_all()
            .map_err(|e| format!("cannot sync {}: {e}", part.display()))?;
        let digest = hex(&md5.finalize());
        if let Some(want) = expected_md5 {
            if !digest.eq_ignore_ascii_case(want) {
                return Err(format!(
                    "{url}: MD5 {digest} differs from the expected {want} (corrupt or wrong file)"
                ));
            }
        }
        Ok(digest)
    })();
    match result {
        Ok(digest) => {
            fs::rename(&part, dest).map_err(|e| {
                format!(
                    "cannot rename {} to {}: {e}",
                    part.display(),
                    dest.display()
                )
            })?;
            Ok(digest)
        }
        Err(e) => {
            let _ = fs::remove_file(&part);
            Err(e)
        }
    }
}

/// The MD5 of a file, as lowercase hex.
pub fn md5_file(path: &Path) -> Result<String, String> {
    let mut file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut md5 = Md5::new();
    io::copy(&mut file, &mut md5).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(hex(&md5.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
