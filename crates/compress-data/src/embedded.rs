//! The datasets shipped in the repository's `datasets/` folder (mnist-5k, photos-12,
//! sr-heldout).

use crate::batch::ImageDataset;
use crate::checksum::verify_dir_exact;
use crate::error::{DataError, Result};
use crate::mnist;
use crate::sr::SrPairs;
use std::path::{Path, PathBuf};

/// Environment variable that overrides where the embedded datasets are looked for.
pub const DATASETS_ENV: &str = "COMPRESS_DATASETS";

/// The `datasets/` folder: `$COMPRESS_DATASETS`, else the first `datasets/manifest.toml` found
/// walking up from the current directory, else the one of the source tree this was built from.
pub fn datasets_dir() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(DATASETS_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            let d = dir.join("datasets");
            if d.join("manifest.toml").is_file() {
                return Ok(d);
            }
        }
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets");
    if built.join("manifest.toml").is_file() {
        return Ok(built);
    }
    Err(DataError::Empty {
        path: PathBuf::from("datasets"),
        msg: format!("cannot find the datasets folder; run from the repository or set {DATASETS_ENV}"),
    })
}

/// The embedded datasets, by folder name.
pub const EMBEDDED: [&str; 3] = ["mnist-5k", "photos-12", "sr-heldout"];

/// Verifies embedded dataset `name` against its `SHA256SUMS`, which must list every file in its
/// folder ([`verify_dir_exact`]); returns how many files were verified.
pub fn verify(name: &str) -> Result<usize> {
    if !EMBEDDED.contains(&name) {
        return Err(DataError::Config(format!("no embedded dataset {name:?}; embedded: {}", EMBEDDED.join(", "))));
    }
    verify_dir_exact(&datasets_dir()?.join(name))
}

/// The embedded MNIST subset (4,000 train / 1,000 test, 1x28x28), checksums verified.
pub fn mnist_5k(split: mnist::Split) -> Result<ImageDataset> {
    verify("mnist-5k")?;
    mnist::load_verified(&datasets_dir()?.join("mnist-5k"), split)
}

/// MNIST's normalisation `(x / 255 - 0.1307) / 0.3081` (mean and std of the full training set).
pub const MNIST_MEAN_STD: (f32, f32) = (0.1307, 0.3081);

/// The first `limit` images (all with `None`) of a mnist-5k split, normalised as
/// [`MNIST_MEAN_STD`], with `augment` applied first.
pub fn mnist_5k_normalised(
    split: mnist::Split,
    augment: crate::batch::Augment,
    limit: Option<usize>,
) -> Result<ImageDataset> {
    let mut d = mnist_5k(split)?;
    if let Some(n) = limit {
        d = d.subset(&(0..n.min(crate::batch::Dataset::len(&d))).collect::<Vec<_>>())?;
    }
    d.with_transform(crate::batch::PixelTransform {
        augment,
        mean: vec![MNIST_MEAN_STD.0],
        std: vec![MNIST_MEAN_STD.1],
    })
}

/// The minis' digits: mnist-5k's train and test splits, normalised as [`MNIST_MEAN_STD`], no
/// augmentation, the first `train_limit` / `test_limit` images of each (all with `None`).
pub fn mnist_5k_digits(train_limit: Option<usize>, test_limit: Option<usize>) -> Result<(ImageDataset, ImageDataset)> {
    let none = crate::batch::Augment::None;
    Ok((
        mnist_5k_normalised(mnist::Split::Train, none, train_limit)?,
        mnist_5k_normalised(mnist::Split::Test, none, test_limit)?,
    ))
}

/// The photos-12 split `train` (7 images) or `test` (5) as SR pairs at `scale`, checksums verified.
pub fn photos_12(split: &str, scale: usize) -> Result<SrPairs> {
    if split != "train" && split != "test" {
        return Err(DataError::Config(format!("photos-12 has splits train and test, not {split:?}")));
    }
    verify("photos-12")?;
    let root = datasets_dir()?.join("photos-12");
    SrPairs::load_dir(&root.join(split), scale)
}

/// The first `limit` images (all with `None`) of the photos-12 split `split` at `scale`.
pub fn photos_12_first(split: &str, scale: usize, limit: Option<usize>) -> Result<SrPairs> {
    let mut p = photos_12(split, scale)?;
    if let Some(n) = limit {
        p.pairs.truncate(n);
    }
    Ok(p)
}

/// The SR evaluation set: photos-12's 5 test images, then the 18 images of sr-heldout (text,
/// faces, microscopy, clip art, historical prints, grayscale; none shares content with
/// photos-12's training images), at `scale`, checksums verified.
#[derive(Debug, Clone)]
pub struct SrEval {
    /// Every pair: photos-12's test images first, then sr-heldout's, each in file-name order.
    pub pairs: SrPairs,
    /// How many of the first pairs are photos-12's test images.
    pub photos_12_test: usize,
}

impl SrEval {
    /// Loads the set at `scale`; `limit` keeps the first images of each subset (smoke runs).
    pub fn load(scale: usize, limit: Option<usize>) -> Result<Self> {
        let mut test = photos_12_first("test", scale, limit)?;
        verify("sr-heldout")?;
        let mut held = SrPairs::load_dir(&datasets_dir()?.join("sr-heldout"), scale)?;
        if let Some(n) = limit {
            held.pairs.truncate(n);
        }
        let photos_12_test = test.pairs.len();
        test.pairs.extend(held.pairs);
        Ok(Self { pairs: test, photos_12_test })
    }

    /// The subsets as `(name, first pair, pairs)`: the whole set, photos-12 test, sr-heldout.
    pub fn subsets(&self) -> [(&'static str, usize, usize); 3] {
        let n = self.pairs.pairs.len();
        [
            ("all", 0, n),
            ("photos-12 test", 0, self.photos_12_test),
            ("sr-heldout", self.photos_12_test, n - self.photos_12_test),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Dataset;

    #[test]
    fn mnist_5k_loads_with_the_documented_split() {
        let train = mnist_5k(mnist::Split::Train).expect("train");
        let test = mnist_5k(mnist::Split::Test).expect("test");
        assert_eq!((train.len(), test.len()), (4000, 1000));
        assert_eq!(train.sample_shape(), [1, 28, 28]);
        assert!(train.class_counts().iter().all(|&c| c == 400), "{:?}", train.class_counts());
        assert!(test.class_counts().iter().all(|&c| c == 100), "{:?}", test.class_counts());
        // Real digits: mostly background with some ink.
        let img = train.raw(0).expect("img");
        let ink = img.iter().filter(|&&p| p > 128).count();
        assert!((40..400).contains(&ink), "{ink}");
    }

    #[test]
    fn photos_12_loads_both_splits() {
        let train = photos_12("train", 2).expect("train");
        let test = photos_12("test", 4).expect("test");
        assert_eq!((train.pairs.len(), test.pairs.len()), (7, 5));
        let chelsea = test.pairs.iter().find(|p| p.path.ends_with("chelsea.png")).expect("chelsea");
        // 451x300 cropped to a multiple of 4: 448x300 (width) by 300 (height).
        assert_eq!((chelsea.height, chelsea.width), (300, 448));
        assert!(photos_12("val", 2).is_err());
    }

    #[test]
    fn the_sr_evaluation_set_is_photos_12_test_then_sr_heldout() {
        let e = SrEval::load(2, None).expect("sr eval");
        assert_eq!((e.pairs.pairs.len(), e.photos_12_test), (23, 5));
        let names: Vec<String> = e.pairs.pairs.iter().map(|p| p.name()).collect();
        assert_eq!(&names[..6], ["camera", "chelsea", "coffee", "coins", "rocket", "acanthus"]);
        // No image of the evaluation set shares a name with a training image.
        let train = photos_12("train", 2).expect("train");
        assert!(train.pairs.iter().all(|t| !names.contains(&t.name())));
        // 102 x 102 microaneurysms stays whole at x2; 255-high house_cat loses a row.
        let find = |n: &str| e.pairs.pairs.iter().find(|p| p.name() == n).expect(n);
        assert_eq!((find("microaneurysms").height, find("microaneurysms").width), (102, 102));
        assert_eq!((find("house_cat").height, find("house_cat").width), (254, 512));
        assert_eq!(e.subsets(), [("all", 0, 23), ("photos-12 test", 0, 5), ("sr-heldout", 5, 18)]);
        let small = SrEval::load(2, Some(1)).expect("limited");
        assert_eq!((small.pairs.pairs.len(), small.photos_12_test), (2, 1));
    }
}
