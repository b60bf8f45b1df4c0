//! SHA-256 of files, and the `SHA256SUMS` lists that accompany each embedded dataset.

use crate::error::{DataError, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// Lower-case hex SHA-256 of a file, streamed in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Lower-case hex SHA-256 of bytes.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks that `path` has SHA-256 `expected` (hex, any case).
pub fn verify_file(path: &Path, expected: &str) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual.eq_ignore_ascii_case(expected.trim()) {
        Ok(())
    } else {
        Err(DataError::Checksum { path: path.to_path_buf(), expected: expected.trim().to_lowercase(), actual })
    }
}

/// Parses a `sha256sum`-style list (`<hex>  <relative path>` per line, `#` comments allowed).
pub fn read_sums(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (digest, name) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| DataError::format(path, format!("line {}: expected '<sha256>  <file>'", i + 1)))?;
        let name = name.trim().trim_start_matches('*');
        if digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()) || name.is_empty() {
            return Err(DataError::format(path, format!("line {}: malformed entry {line:?}", i + 1)));
        }
        out.insert(name.to_string(), digest.to_lowercase());
    }
    Ok(out)
}

/// Verifies every file listed in `<dir>/SHA256SUMS`; returns how many were checked.
pub fn verify_dir(dir: &Path) -> Result<usize> {
    let sums = read_sums(&dir.join("SHA256SUMS"))?;
    for (name, digest) in &sums {
        verify_file(&dir.join(name), digest)?;
    }
    Ok(sums.len())
}

/// [`verify_dir`] for a folder that `SHA256SUMS` describes completely (the embedded datasets):
/// a missing `SHA256SUMS`, or any file in the folder or below it that the list does not name
/// (hidden files aside), is an error, so an image dropped into a split cannot join it
/// unverified. Returns how many files were verified.
pub fn verify_dir_exact(dir: &Path) -> Result<usize> {
    let sums_path = dir.join("SHA256SUMS");
    if !sums_path.is_file() {
        return Err(DataError::Empty { path: sums_path, msg: "no SHA256SUMS: this dataset cannot be verified".into() });
    }
    let sums = read_sums(&sums_path)?;
    let mut unlisted = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| DataError::io(&d, e))? {
            let p = e.map_err(|e| DataError::io(&d, e))?.path();
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(dir).map(|r| r.to_string_lossy().replace('\\', "/")).unwrap_or(name);
            if rel != "SHA256SUMS" && !sums.contains_key(&rel) {
                unlisted.push(rel);
            }
        }
    }
    if !unlisted.is_empty() {
        unlisted.sort();
        return Err(DataError::format(
            &sums_path,
            format!("{} is not listed here; remove it or list its sha256", unlisted.join(", ")),
        ));
    }
    verify_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(sha256_bytes(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn mismatch_names_file_and_both_digests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.bin");
        std::fs::write(&p, b"abc").expect("write");
        let err = verify_file(&p, &"0".repeat(64)).expect_err("must mismatch");
        let msg = err.to_string();
        assert!(msg.contains("x.bin") && msg.contains("ba7816bf") && msg.contains("checksum"), "{msg}");
    }

    #[test]
    fn an_exact_folder_refuses_unlisted_files_and_a_missing_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("test")).expect("mkdir");
        std::fs::write(dir.path().join("test/a.png"), b"abc").expect("write");
        assert!(verify_dir_exact(dir.path()).expect_err("no list").to_string().contains("SHA256SUMS"));
        let line = format!("{}  test/a.png\n", sha256_bytes(b"abc"));
        std::fs::write(dir.path().join("SHA256SUMS"), line).expect("write");
        assert_eq!(verify_dir_exact(dir.path()).expect("verified"), 1);
        std::fs::write(dir.path().join(".DS_Store"), b"x").expect("hidden");
        assert_eq!(verify_dir_exact(dir.path()).expect("hidden files aside"), 1);
        std::fs::write(dir.path().join("test/extra.png"), b"x").expect("write");
        let e = verify_dir_exact(dir.path()).expect_err("unlisted");
        assert!(e.to_string().contains("test/extra.png is not listed"), "{e}");
    }

    #[test]
    fn malformed_sums_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("SHA256SUMS");
        std::fs::write(&p, "nothex  file\n").expect("write");
        assert!(matches!(read_sums(&p), Err(DataError::Format { .. })));
    }
}
