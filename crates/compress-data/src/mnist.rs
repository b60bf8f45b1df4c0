//! MNIST in the IDX format (LeCun et al.), plain or gzip-compressed.
//!
//! IDX layout: big-endian `u32` magic (`0x00000803` images, `0x00000801` labels), `u32` count,
//! for images `u32` rows and `u32` cols, then raw `u8` row-major data. A file whose first two
//! bytes are the gzip magic `1f 8b` is decompressed transparently.

use crate::batch::ImageDataset;
use crate::error::{DataError, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;
const NUM_CLASSES: usize = 10;

/// Which half of MNIST to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// `train-*-ubyte`.
    Train,
    /// `t10k-*-ubyte`.
    Test,
}

impl Split {
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// The whole size an IDX file's header declares (header included), when `head` (its first 16
/// bytes, or fewer) holds a known magic number and the size fits in memory.
fn declared_size(head: &[u8]) -> Option<usize> {
    let word = |at: usize| head.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    match word(0)? as u32 {
        IMAGES_MAGIC => word(4)?.checked_mul(word(8)?)?.checked_mul(word(12)?)?.checked_add(16),
        LABELS_MAGIC => word(4)?.checked_add(8),
        _ => None,
    }
}

/// Reads a whole IDX file, gunzipping it when it starts with the gzip magic. A compressed
/// stream is inflated no further than one byte past the size its IDX header declares (a small
/// file that inflates to gigabytes stops there); [`parse_images`] and [`parse_labels`] then
/// name the trailing data.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let corrupt = |e: std::io::Error| DataError::format(path, format!("corrupt or truncated gzip stream: {e}"));
    let mut gz = GzDecoder::new(raw.as_slice());
    let mut out = Vec::new();
    (&mut gz).take(16).read_to_end(&mut out).map_err(corrupt)?;
    let total = declared_size(&out).unwrap_or(out.len());
    let rest = (total.saturating_sub(out.len()) as u64).saturating_add(1);
    out.reserve(total.saturating_sub(out.len()).min(raw.len().saturating_mul(64)));
    gz.take(rest).read_to_end(&mut out).map_err(corrupt)?;
    Ok(out)
}

fn be_u32(bytes: &[u8], at: usize, path: &Path) -> Result<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| DataError::format(path, format!("truncated IDX header: {} bytes", bytes.len())))
}

/// Parses an IDX3 image file: returns `(count, rows, cols, pixels)`.
pub fn parse_images(bytes: &[u8], path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let magic = be_u32(bytes, 0, path)?;
    if magic != IMAGES_MAGIC {
        return Err(DataError::format(
            path,
            format!("wrong magic number {magic:#010x}, expected {IMAGES_MAGIC:#010x} (IDX3 images)"),
        ));
    }
    let n = be_u32(bytes, 4, path)? as usize;
    let rows = be_u32(bytes, 8, path)? as usize;
    let cols = be_u32(bytes, 12, path)? as usize;
    if rows == 0 || cols == 0 {
        return Err(DataError::format(path, format!("image size {rows}x{cols} is empty")));
    }
    let expected = rows
        .checked_mul(cols)
        .and_then(|p| p.checked_mul(n))
        .ok_or_else(|| DataError::format(path, "image count overflows"))?;
    let body = &bytes[16..];
    if body.len() != expected {
        return Err(DataError::format(
            path,
            format!(
                "{} pixel bytes for {n} images of {rows}x{cols}, expected {expected} ({})",
                body.len(),
                if body.len() < expected { "truncated" } else { "trailing data" }
            ),
        ));
    }
    Ok((n, rows, cols, body.to_vec()))
}

/// Parses an IDX1 label file, checking every label is below `num_classes`.
pub fn parse_labels(bytes: &[u8], path: &Path, num_classes: usize) -> Result<Vec<u32>> {
    let magic = be_u32(bytes, 0, path)?;
    if magic != LABELS_MAGIC {
        return Err(DataError::format(
            path,
            format!("wrong magic number {magic:#010x}, expected {LABELS_MAGIC:#010x} (IDX1 labels)"),
        ));
    }
    let n = be_u32(bytes, 4, path)? as usize;
    let body = &bytes[8..];
    if body.len() != n {
        return Err(DataError::format(
            path,
            format!(
                "{} label bytes, header says {n} ({})",
                body.len(),
                if body.len() < n { "truncated" } else { "trailing data" }
            ),
        ));
    }
    body.iter()
        .enumerate()
        .map(|(i, &l)| {
            if (l as usize) < num_classes {
                Ok(u32::from(l))
            } else {
                Err(DataError::format(path, format!("label {l} of sample {i} is out of range 0..{num_classes}")))
            }
        })
        .collect()
}

/// Finds `<dir>/<stem>` or `<dir>/<stem>.gz`.
fn locate(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(DataError::Empty { path: dir.to_path_buf(), msg: format!("no {stem} or {stem}.gz here") })
}

/// Loads one MNIST split from `dir` as a 1x28x28 [`ImageDataset`].
///
/// If `dir` holds a `SHA256SUMS` list, every listed file is verified first.
pub fn load(dir: &Path, split: Split) -> Result<ImageDataset> {
    if dir.join("SHA256SUMS").is_file() {
        crate::checksum::verify_dir(dir)?;
    }
    load_verified(dir, split)
}

/// [`load`] of a folder whose checksums the caller has verified.
pub(crate) fn load_verified(dir: &Path, split: Split) -> Result<ImageDataset> {
    let img_path = locate(dir, &format!("{}-images-idx3-ubyte", split.prefix()))?;
    let lbl_path = locate(dir, &format!("{}-labels-idx1-ubyte", split.prefix()))?;
    let (n, rows, cols, pixels) = parse_images(&read_maybe_gz(&img_path)?, &img_path)?;
    let labels = parse_labels(&read_maybe_gz(&lbl_path)?, &lbl_path, NUM_CLASSES)?;
    if labels.len() != n {
        return Err(DataError::format(
            &lbl_path,
            format!("{} labels but {} holds {n} images", labels.len(), img_path.display()),
        ));
    }
    if n == 0 {
        return Err(DataError::Empty { path: img_path, msg: "holds no images".into() });
    }
    ImageDataset::new(format!("mnist-{}", split.prefix()), pixels, [1, rows, cols], labels, NUM_CLASSES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx_images(n: u32, r: u32, c: u32, body_len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [IMAGES_MAGIC, n, r, c] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v.extend((0..body_len).map(|i| (i % 251) as u8));
        v
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
        v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        v.extend_from_slice(labels);
        v
    }

    #[test]
    fn parses_valid_images_and_labels() {
        let p = Path::new("x");
        let (n, r, c, px) = parse_images(&idx_images(2, 3, 4, 24), p).expect("valid");
        assert_eq!((n, r, c, px.len()), (2, 3, 4, 24));
        assert_eq!(parse_labels(&idx_labels(&[0, 9]), p, 10).expect("valid"), vec![0, 9]);
    }

    #[test]
    fn rejects_truncated_trailing_and_header() {
        let p = Path::new("imgs.idx");
        let e = parse_images(&idx_images(2, 3, 4, 23), p).expect_err("truncated");
        assert!(e.to_string().contains("truncated") && e.to_string().contains("imgs.idx"), "{e}");
        let e = parse_images(&idx_images(2, 3, 4, 25), p).expect_err("trailing");
        assert!(e.to_string().contains("trailing"), "{e}");
        let e = parse_images(&idx_images(2, 3, 4, 24)[..10], p).expect_err("header");
        assert!(e.to_string().contains("truncated IDX header"), "{e}");
    }

    #[test]
    fn rejects_wrong_magic_and_label_out_of_range() {
        let p = Path::new("lbl");
        let e = parse_images(&idx_labels(&[1, 2]), p).expect_err("labels are not images");
        assert!(e.to_string().contains("wrong magic"), "{e}");
        let e = parse_labels(&idx_labels(&[1, 10]), p, 10).expect_err("label 10");
        assert!(e.to_string().contains("label 10 of sample 1 is out of range"), "{e}");
    }

    #[test]
    fn count_mismatch_between_files_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), idx_images(3, 2, 2, 12)).expect("w");
        std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), idx_labels(&[1, 2])).expect("w");
        let e = load(dir.path(), Split::Test).expect_err("3 images, 2 labels");
        assert!(e.to_string().contains("2 labels"), "{e}");
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("bad.gz");
        std::fs::write(&p, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3]).expect("w");
        let e = read_maybe_gz(&p).expect_err("corrupt");
        assert!(e.to_string().contains("gzip"), "{e}");
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(bytes).expect("gzip");
        e.finish().expect("gzip")
    }

    #[test]
    fn a_gzip_bomb_inflates_no_further_than_its_header_allows() {
        // A header for two 2x2 images followed by 64 MiB of zeros: a 64 KiB file.
        let mut idx = idx_images(2, 2, 2, 8);
        idx.resize(idx.len() + (64 << 20), 0);
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("bomb-images-idx3-ubyte.gz");
        std::fs::write(&p, gzip(&idx)).expect("write");
        let bytes = read_maybe_gz(&p).expect("reads");
        assert_eq!(bytes.len(), 16 + 8 + 1, "inflated past the declared size");
        let e = parse_images(&bytes, &p).expect_err("trailing");
        assert!(e.to_string().contains("trailing data"), "{e}");
        // A well-formed compressed file reads whole.
        let good = idx_images(3, 2, 2, 12);
        std::fs::write(&p, gzip(&good)).expect("write");
        assert_eq!(read_maybe_gz(&p).expect("reads"), good);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let p = Path::new("fuzz");
            let _ = parse_images(&bytes, p);
            let _ = parse_labels(&bytes, p, 10);
        }

        #[test]
        fn arbitrary_headers_never_panic(n: u32, r: u32, c: u32, extra in 0usize..40) {
            let mut b = idx_images(n, r, c, 0);
            b.extend(std::iter::repeat_n(7u8, extra));
            let _ = parse_images(&b, Path::new("fuzz"));
            let _ = declared_size(&b);
        }
    }
}
