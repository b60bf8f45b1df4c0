//! Files written whole or not at all: a temporary name of the writer's own, then a rename.

use std::path::{Path, PathBuf};

/// `<path>.<pid>-<n>.tmp`: a temporary name that no other writer (process or thread) uses, so
/// two runs saving the same file at once never write into one temporary.
pub fn temporary(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}-{n}.tmp", std::process::id()));
    PathBuf::from(tmp)
}

/// Writes `path` through `write(temporary)` and a rename; the temporary is removed on failure.
pub fn write_with<E: From<std::io::Error>>(path: &Path, write: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
    let tmp = temporary(path);
    let done = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(E::from));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_with(path, |tmp| std::fs::write(tmp, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_are_unique_and_a_failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f.bin");
        assert_ne!(temporary(&p), temporary(&p));
        write(&p, b"abc").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"abc");
        let failed: std::io::Result<()> = write_with(&p, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&p).expect("read"), b"abc", "the old file was replaced");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1, "a temporary was left");
    }
}
