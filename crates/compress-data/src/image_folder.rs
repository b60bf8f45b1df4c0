//! ImageNet-style class folders (`root/<class>/<image>.{jpg,jpeg,png}`), as torchvision's
//! `ImageFolder`, with the standard transforms of ImageNet training and evaluation.
//!
//! Train: `RandomResizedCrop(224, scale=(0.08, 1), ratio=(3/4, 4/3))` then a horizontal flip with
//! probability 1/2. Eval: resize the shorter side to 256, centre-crop 224. Both normalise with the
//! ImageNet mean and std. Files decode in parallel (the [`crate::Batcher`] loads a batch's samples
//! on the rayon pool). Resizing uses a triangle (bilinear) filter widened when shrinking, as
//! PIL's antialiased bilinear does.

use crate::batch::Dataset;
use crate::decode;
use crate::error::{DataError, Result};
use image::imageops::FilterType;
use rand::Rng;
use rand::rngs::StdRng;
use std::path::{Path, PathBuf};

/// ImageNet channel means (RGB, in [0, 1]).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The per-image transform of an [`ImageFolder`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FolderTransform {
    /// Random-resized crop to `size` x `size` plus a random horizontal flip.
    Train {
        /// Output side (224 for ImageNet).
        size: usize,
    },
    /// Resize the shorter side to `resize`, then centre-crop `size` x `size`.
    Eval {
        /// Shorter side after resizing (256 for ImageNet).
        resize: usize,
        /// Output side (224 for ImageNet).
        size: usize,
    },
}

impl FolderTransform {
    /// The ImageNet training transform.
    pub const IMAGENET_TRAIN: Self = Self::Train { size: 224 };
    /// The ImageNet evaluation transform.
    pub const IMAGENET_EVAL: Self = Self::Eval { resize: 256, size: 224 };

    fn size(&self) -> usize {
        match *self {
            Self::Train { size } | Self::Eval { size, .. } => size,
        }
    }
}

/// Labelled images in class folders, decoded on demand.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    samples: Vec<(PathBuf, u32)>,
    transform: FolderTransform,
}

impl ImageFolder {
    /// Scans `root`: each sub-folder (sorted by name) is a class; every PNG/JPEG in it a sample.
    pub fn open(root: &Path, transform: FolderTransform) -> Result<Self> {
        if transform.size() == 0 || matches!(transform, FolderTransform::Eval { resize, size } if resize < size) {
            return Err(DataError::Config(format!("impossible transform {transform:?}")));
        }
        let mut classes: Vec<(String, PathBuf)> = std::fs::read_dir(root)
            .map_err(|e| DataError::io(root, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .map(|p| (p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), p))
            .collect();
        classes.sort();
        if classes.is_empty() {
            return Err(DataError::Empty { path: root.to_path_buf(), msg: "no class folders here".into() });
        }
        let mut samples = Vec::new();
        for (label, (name, dir)) in classes.iter().enumerate() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| DataError::io(dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && decode::is_image(p))
                .collect();
            if files.is_empty() {
                return Err(DataError::Empty {
                    path: dir.clone(),
                    msg: format!("class {name:?} has no PNG or JPEG images"),
                });
            }
            files.sort();
            samples.extend(files.into_iter().map(|f| (f, label as u32)));
        }
        Ok(Self { root: root.to_path_buf(), classes: classes.into_iter().map(|c| c.0).collect(), samples, transform })
    }

    /// The class names, in label order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The folder this dataset was read from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `(file, label)` of every sample.
    pub fn samples(&self) -> &[(PathBuf, u32)] {
        &self.samples
    }
}

/// torchvision's `RandomResizedCrop.get_params`: `(top, left, height, width)` of the crop.
pub fn random_resized_crop(h: usize, w: usize, rng: &mut StdRng) -> (usize, usize, usize, usize) {
    let area = (h * w) as f64;
    let (lo, hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.random_range(0.08..=1.0);
        let ratio = rng.random_range(lo..=hi).exp();
        let cw = (target * ratio).sqrt().round() as usize;
        let ch = (target / ratio).sqrt().round() as usize;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            return (rng.random_range(0..=h - ch), rng.random_range(0..=w - cw), ch, cw);
        }
    }
    // Fallback: the central crop with the ratio clamped to [3/4, 4/3].
    let in_ratio = w as f64 / h as f64;
    let (ch, cw) = if in_ratio < 0.75 {
        ((w as f64 / 0.75).round() as usize, w)
    } else if in_ratio > 4.0 / 3.0 {
        (h, (h as f64 * 4.0 / 3.0).round() as usize)
    } else {
        (h, w)
    };
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn sample_shape(&self) -> [usize; 3] {
        let s = self.transform.size();
        [3, s, s]
    }

    fn num_classes(&self) -> usize {
        self.classes.len()
    }

    fn load(&self, index: usize, rng: &mut StdRng, out: &mut [f32]) -> Result<u32> {
        let (path, label) = self
            .samples
            .get(index)
            .ok_or_else(|| DataError::Config(format!("index {index} out of range 0..{}", self.samples.len())))?;
        let img = decode::open(path)?.to_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let (img, flip) = match self.transform {
            FolderTransform::Train { size } => {
                let (t, l, ch, cw) = random_resized_crop(h, w, rng);
                let crop = image::imageops::crop_imm(&img, l as u32, t as u32, cw as u32, ch as u32).to_image();
                (image::imageops::resize(&crop, size as u32, size as u32, FilterType::Triangle), rng.random_bool(0.5))
            }
            FolderTransform::Eval { resize, size } => {
                // torchvision Resize(int): shorter side to `resize`, longer side truncated.
                let (nh, nw) = if h <= w { (resize, resize * w / h) } else { (resize * h / w, resize) };
                let r = image::imageops::resize(&img, nw as u32, nh as u32, FilterType::Triangle);
                let top = ((nh - size) as f64 / 2.0).round() as u32;
                let left = ((nw - size) as f64 / 2.0).round() as u32;
                (image::imageops::crop_imm(&r, left, top, size as u32, size as u32).to_image(), false)
            }
        };
        let s = self.transform.size();
        for (i, px) in img.pixels().enumerate() {
            let (y, x) = (i / s, i % s);
            let x = if flip { s - 1 - x } else { x };
            for c in 0..3 {
                out[(c * s + y) * s + x] = (f32::from(px.0[c]) / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            }
        }
        Ok(*label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Batcher;
    use candle_core::Device;
    use compress_core::rng::SeededRng;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (class, n, (w, h)) in [("cat", 2, (300, 200)), ("dog", 1, (180, 260))] {
            let d = dir.path().join(class);
            std::fs::create_dir(&d).expect("mkdir");
            for i in 0..n {
                let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
                img.save(d.join(format!("{i}.png"))).expect("png");
                img.save(d.join(format!("{i}.jpg"))).expect("jpg");
            }
            std::fs::write(d.join("notes.txt"), "ignored").expect("txt");
        }
        dir
    }

    #[test]
    fn scans_classes_and_batches_both_transforms() {
        let dir = tree();
        for t in [FolderTransform::Train { size: 64 }, FolderTransform::Eval { resize: 73, size: 64 }] {
            let f = ImageFolder::open(dir.path(), t).expect("open");
            assert_eq!(f.classes(), &["cat", "dog"]);
            assert_eq!(f.len(), 6);
            let b = Batcher::new(4, true, 0, Device::Cpu).expect("b");
            let batches: Vec<_> = b.epoch(&f, 0, 0).expect("e").collect::<Result<_>>().expect("decode");
            assert_eq!(batches[0].images.dims(), &[4, 3, 64, 64]);
            assert_eq!(batches[1].images.dims(), &[2, 3, 64, 64]);
        }
    }

    #[test]
    fn eval_transform_is_a_centre_crop() {
        let dir = tree();
        let f = ImageFolder::open(dir.path(), FolderTransform::Eval { resize: 200, size: 100 }).expect("open");
        // cat/0.png is 300x200 with red = x: after resizing to 300x200 (no change) the crop's
        // left column is x = 100.
        let mut out = vec![0f32; 3 * 100 * 100];
        f.load(1, &mut SeededRng::new(0).stream("x", 0), &mut out).expect("load");
        let red = (out[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255.0;
        assert!((red - 100.0).abs() < 0.6, "{red}");
    }

    #[test]
    fn random_resized_crop_stays_inside_with_torchvision_bounds() {
        let mut rng = SeededRng::new(3).stream("rrc", 0);
        for (h, w) in [(200, 300), (500, 50), (10, 10)] {
            for _ in 0..200 {
                let (t, l, ch, cw) = random_resized_crop(h, w, &mut rng);
                assert!(ch > 0 && cw > 0 && t + ch <= h && l + cw <= w, "{h}x{w}: {t} {l} {ch} {cw}");
            }
        }
    }

    #[test]
    fn random_resized_crop_draws_torchvision_scales_and_ratios_and_falls_back_centrally() {
        // On 1000 x 1000 the first attempt always fits: scale uniform on [0.08, 1], ratio
        // log-uniform on [3/4, 4/3] (up to the rounding of each side).
        let mut rng = SeededRng::new(5).stream("rrc", 1);
        let (mut small, mut wide, n) = (0usize, 0usize, 4000usize);
        for _ in 0..n {
            let (t, l, ch, cw) = random_resized_crop(1000, 1000, &mut rng);
            let (scale, ratio) = ((ch * cw) as f64 / 1e6, cw as f64 / ch as f64);
            assert!((0.079..=1.0).contains(&scale), "scale {scale}");
            assert!((0.749..=1.336).contains(&ratio), "ratio {ratio}");
            assert!(t + ch <= 1000 && l + cw <= 1000);
            small += usize::from(scale < 0.2);
            wide += usize::from(ratio > 1.0);
        }
        // An attempt fits iff scale <= exp(-|ln ratio|) (a side would exceed 1000 otherwise)
        // and is redrawn if not, so with a = ln(4/3):
        // P(fit) = ((1 - e^-a) / a - 0.08) / 0.92 = 0.85762 and
        // P(scale < 0.2) = (0.12 / 0.92) / P(fit) = 0.15209 (every such scale fits);
        // P(ratio > 1) = 1/2 by symmetry. Standard errors at n = 4000: 0.0057 and 0.0079.
        let (ps, pw) = (small as f64 / n as f64, wide as f64 / n as f64);
        assert!((ps - 0.15209).abs() < 0.025, "P(scale < 0.2) = {ps}");
        assert!((pw - 0.5).abs() < 0.03, "P(ratio > 1) = {pw}");
        // A 1 x 1000 strip: no attempt fits, so torchvision's fallback: the ratio clamped to 4/3
        // (height 1, width round(4/3) = 1), centred; and the transposed strip likewise.
        assert_eq!(random_resized_crop(1, 1000, &mut rng), (0, 499, 1, 1));
        assert_eq!(random_resized_crop(1000, 1, &mut rng), (499, 0, 1, 1));
    }

    #[test]
    fn empty_root_empty_class_and_corrupt_jpeg_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(ImageFolder::open(dir.path(), FolderTransform::IMAGENET_EVAL), Err(DataError::Empty { .. })));
        std::fs::create_dir(dir.path().join("empty")).expect("mkdir");
        let e = ImageFolder::open(dir.path(), FolderTransform::IMAGENET_EVAL).expect_err("empty class");
        assert!(e.to_string().contains("empty"), "{e}");
        let t = tree();
        let jpg = t.path().join("dog/0.jpg");
        let bytes = std::fs::read(&jpg).expect("r");
        std::fs::write(&jpg, &bytes[..bytes.len() * 2 / 3]).expect("w");
        let f = ImageFolder::open(t.path(), FolderTransform::Eval { resize: 64, size: 32 }).expect("open");
        let b = Batcher::new(8, false, 0, Device::Cpu).expect("b");
        let e = b.epoch(&f, 0, 0).expect("e").next().expect("one").expect_err("truncated jpeg");
        assert!(e.to_string().contains("0.jpg") && e.to_string().contains("truncated JPEG"), "{e}");
        let mut garbage = bytes[..20].to_vec();
        garbage.extend(std::iter::repeat_n(0x55u8, 500));
        garbage.extend([0xFF, 0xDA, 0, 2, 0xFF, 0xD9]);
        std::fs::write(&jpg, garbage).expect("w");
        let e = b.epoch(&f, 0, 0).expect("e").next().expect("one").expect_err("corrupt jpeg");
        assert!(e.to_string().contains("0.jpg") && e.to_string().contains("cannot decode"), "{e}");
    }
}
