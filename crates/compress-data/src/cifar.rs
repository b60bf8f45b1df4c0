//! CIFAR-10 and CIFAR-100 in their binary distributions (Krizhevsky 2009).
//!
//! CIFAR-10 (`cifar-10-batches-bin/`): records of 1 label byte + 3072 pixel bytes (R, G, B planes
//! of 32x32), in `data_batch_1..5.bin` and `test_batch.bin`. CIFAR-100 (`cifar-100-binary/`):
//! records of a coarse label byte, a fine label byte, then 3072 pixel bytes, in `train.bin` and
//! `test.bin`; the fine label (100 classes) is used.

use crate::batch::ImageDataset;
use crate::error::{DataError, Result};
use std::path::{Path, PathBuf};

const PIXELS: usize = 3 * 32 * 32;

/// Which CIFAR variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// 10 classes, 1 label byte per record.
    Cifar10,
    /// 100 fine classes (20 coarse), 2 label bytes per record.
    Cifar100,
}

impl Variant {
    fn label_bytes(self) -> usize {
        match self {
            Variant::Cifar10 => 1,
            Variant::Cifar100 => 2,
        }
    }

    /// Number of (fine) classes.
    pub fn num_classes(self) -> usize {
        match self {
            Variant::Cifar10 => 10,
            Variant::Cifar100 => 100,
        }
    }

    fn files(self, train: bool) -> Vec<&'static str> {
        match (self, train) {
            (Variant::Cifar10, true) => {
                vec!["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"]
            }
            (Variant::Cifar10, false) => vec!["test_batch.bin"],
            (Variant::Cifar100, true) => vec!["train.bin"],
            (Variant::Cifar100, false) => vec!["test.bin"],
        }
    }
}

/// Parses one binary CIFAR file into `(pixels, labels)`, validating its size and label range.
pub fn parse(bytes: &[u8], path: &Path, variant: Variant) -> Result<(Vec<u8>, Vec<u32>)> {
    let rec = variant.label_bytes() + PIXELS;
    if bytes.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf(), msg: "file is empty".into() });
    }
    if !bytes.len().is_multiple_of(rec) {
        return Err(DataError::format(
            path,
            format!("{} bytes is not a whole number of {rec}-byte records (truncated or corrupt)", bytes.len()),
        ));
    }
    let n = bytes.len() / rec;
    let mut pixels = Vec::with_capacity(n * PIXELS);
    let mut labels = Vec::with_capacity(n);
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        let (coarse, fine) = match variant {
            Variant::Cifar10 => (None, r[0]),
            Variant::Cifar100 => (Some(r[0]), r[1]),
        };
        if let Some(c) = coarse
            && c >= 20
        {
            return Err(DataError::format(path, format!("coarse label {c} of record {i} is out of range 0..20")));
        }
        if usize::from(fine) >= variant.num_classes() {
            return Err(DataError::format(
                path,
                format!("label {fine} of record {i} is out of range 0..{}", variant.num_classes()),
            ));
        }
        labels.push(u32::from(fine));
        pixels.extend_from_slice(&r[variant.label_bytes()..]);
    }
    Ok((pixels, labels))
}

/// Loads the train (`train = true`) or test split from `dir`, a `cifar-10-batches-bin` or
/// `cifar-100-binary` folder, as a 3x32x32 [`ImageDataset`]. Verifies `SHA256SUMS` if present.
pub fn load(dir: &Path, variant: Variant, train: bool) -> Result<ImageDataset> {
    if dir.join("SHA256SUMS").is_file() {
        crate::checksum::verify_dir(dir)?;
    }
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for name in variant.files(train) {
        let path: PathBuf = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        let (p, l) = parse(&bytes, &path, variant)?;
        pixels.extend(p);
        labels.extend(l);
    }
    let name = format!(
        "{}-{}",
        if variant == Variant::Cifar10 { "cifar10" } else { "cifar100" },
        if train { "train" } else { "test" }
    );
    ImageDataset::new(name, pixels, [3, 32, 32], labels, variant.num_classes())
}

/// The usual per-channel normalisation of CIFAR-10 (mean, std over the training set).
pub const CIFAR10_MEAN_STD: ([f32; 3], [f32; 3]) = ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Dataset;

    fn record(label: &[u8], fill: u8) -> Vec<u8> {
        let mut r = label.to_vec();
        r.extend(std::iter::repeat_n(fill, PIXELS));
        r
    }

    #[test]
    fn loads_cifar10_layout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bytes = record(&[3], 10);
        bytes.extend(record(&[9], 20));
        std::fs::write(dir.path().join("test_batch.bin"), &bytes).expect("w");
        let d = load(dir.path(), Variant::Cifar10, false).expect("valid");
        assert_eq!(d.len(), 2);
        assert_eq!(d.labels(), &[3, 9]);
        assert_eq!(d.raw(1).expect("img")[0], 20);
        assert_eq!(d.sample_shape(), [3, 32, 32]);
    }

    #[test]
    fn cifar100_uses_fine_label_and_checks_both() {
        let p = Path::new("train.bin");
        let (_, l) = parse(&record(&[19, 99], 0), p, Variant::Cifar100).expect("valid");
        assert_eq!(l, vec![99]);
        let e = parse(&record(&[20, 5], 0), p, Variant::Cifar100).expect_err("coarse 20");
        assert!(e.to_string().contains("coarse label 20"), "{e}");
        let e = parse(&record(&[1, 100], 0), p, Variant::Cifar100).expect_err("fine 100");
        assert!(e.to_string().contains("label 100 of record 0"), "{e}");
    }

    #[test]
    fn truncated_and_bad_label_are_errors() {
        let p = Path::new("data_batch_1.bin");
        let mut b = record(&[1], 0);
        b.pop();
        let e = parse(&b, p, Variant::Cifar10).expect_err("truncated");
        assert!(e.to_string().contains("data_batch_1.bin") && e.to_string().contains("truncated"), "{e}");
        let e = parse(&record(&[10], 0), p, Variant::Cifar10).expect_err("label 10");
        assert!(e.to_string().contains("out of range"), "{e}");
        assert!(parse(&[], p, Variant::Cifar10).is_err());
    }

    #[test]
    fn missing_file_names_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = load(dir.path(), Variant::Cifar100, true).expect_err("missing");
        assert!(e.to_string().contains("train.bin"), "{e}");
    }
}
