//! In-memory image datasets and the streaming, seeded batcher every loader feeds.
//!
//! A [`Dataset`] produces one CHW `f32` sample at a time from an index and a per-sample random
//! generator; the [`Batcher`] orders the indices (a seeded permutation per epoch), loads the
//! samples of a batch in parallel and stacks them into an NCHW tensor. The permutation and every
//! augmentation draw are pure functions of `(seed, epoch, index)`, so a resumed epoch repeats an
//! uninterrupted one exactly.

use crate::error::{DataError, Result};
use candle_core::{Device, Tensor};
use compress_core::rng::SeededRng;
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;

/// A source of labelled CHW `f32` samples.
pub trait Dataset: Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    /// Whether the dataset holds no sample.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `[C, H, W]` of every sample this dataset produces.
    fn sample_shape(&self) -> [usize; 3];
    /// Number of classes (labels lie in `0..num_classes`).
    fn num_classes(&self) -> usize;
    /// Writes sample `index` into `out` (length C*H*W) and returns its label.
    fn load(&self, index: usize, rng: &mut StdRng, out: &mut [f32]) -> Result<u32>;
}

/// Per-sample augmentation of small in-memory images.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Augment {
    /// No augmentation (evaluation).
    #[default]
    None,
    /// Zero-pad by `pad` pixels, take a random crop of the original size, flip horizontally with
    /// probability 1/2 (the CIFAR recipe of He et al. 2016).
    PadCropFlip {
        /// Padding on each side.
        pad: usize,
    },
    /// Zero-pad and random crop without flipping (digits must not be mirrored).
    PadCrop {
        /// Padding on each side.
        pad: usize,
    },
}

/// How `u8` pixels become `f32` values: `(x / 255 - mean[c]) / std[c]` after augmentation.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelTransform {
    /// The augmentation applied first.
    pub augment: Augment,
    /// Per-channel mean subtracted after scaling to [0, 1] (empty: none).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by (empty: none).
    pub std: Vec<f32>,
}

impl Default for PixelTransform {
    fn default() -> Self {
        Self { augment: Augment::None, mean: Vec::new(), std: Vec::new() }
    }
}

/// Labelled `u8` images held in memory (MNIST, CIFAR), all of one `[C, H, W]` shape.
#[derive(Debug, Clone)]
pub struct ImageDataset {
    name: String,
    pixels: Vec<u8>,
    shape: [usize; 3],
    labels: Vec<u32>,
    num_classes: usize,
    transform: PixelTransform,
}

impl ImageDataset {
    /// Wraps `pixels` (N x C x H x W, row-major) and `labels`, checking sizes and label range.
    pub fn new(
        name: impl Into<String>,
        pixels: Vec<u8>,
        shape: [usize; 3],
        labels: Vec<u32>,
        num_classes: usize,
    ) -> Result<Self> {
        let name = name.into();
        let per = shape.iter().product::<usize>();
        if per == 0 || pixels.len() != labels.len() * per {
            return Err(DataError::Config(format!(
                "{name}: {} pixel bytes do not make {} images of shape {shape:?}",
                pixels.len(),
                labels.len()
            )));
        }
        if let Some((i, l)) = labels.iter().enumerate().find(|(_, l)| **l as usize >= num_classes) {
            return Err(DataError::Config(format!("{name}: label {l} of sample {i} is out of range 0..{num_classes}")));
        }
        Ok(Self { name, pixels, shape, labels, num_classes, transform: PixelTransform::default() })
    }

    /// The same images with `transform` applied on loading.
    pub fn with_transform(mut self, transform: PixelTransform) -> Result<Self> {
        let c = self.shape[0];
        for (what, v) in [("mean", &transform.mean), ("std", &transform.std)] {
            if !v.is_empty() && v.len() != c {
                return Err(DataError::Config(format!(
                    "{}: {what} has {} entries for {c} channels",
                    self.name,
                    v.len()
                )));
            }
        }
        if transform.std.iter().any(|s| s.is_nan() || *s <= 0.0) {
            return Err(DataError::Config(format!("{}: std must be positive", self.name)));
        }
        self.transform = transform;
        Ok(self)
    }

    /// The dataset's name (e.g. `mnist-train`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// All labels in order.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The raw `u8` pixels of image `i` (C x H x W).
    pub fn raw(&self, i: usize) -> Option<&[u8]> {
        let per = self.shape.iter().product::<usize>();
        self.pixels.get(i * per..(i + 1) * per)
    }

    /// The dataset split into its first `len - last` samples and its last `last` (a validation
    /// split held out from training); `last` must leave both parts non-empty.
    pub fn holdout(&self, last: usize) -> Result<(Self, Self)> {
        let n = self.len();
        if last == 0 || last >= n {
            return Err(DataError::Config(format!("{}: a hold-out of {last} of {n} samples", self.name)));
        }
        Ok((self.subset(&(0..n - last).collect::<Vec<_>>())?, self.subset(&(n - last..n).collect::<Vec<_>>())?))
    }

    /// A dataset holding only the samples at `indices` (in that order).
    pub fn subset(&self, indices: &[usize]) -> Result<Self> {
        let per = self.shape.iter().product::<usize>();
        let mut pixels = Vec::with_capacity(indices.len() * per);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let px = self
                .raw(i)
                .ok_or_else(|| DataError::Config(format!("{}: index {i} out of range 0..{}", self.name, self.len())))?;
            pixels.extend_from_slice(px);
            labels.push(self.labels[i]);
        }
        Ok(Self {
            name: self.name.clone(),
            pixels,
            shape: self.shape,
            labels,
            num_classes: self.num_classes,
            transform: self.transform.clone(),
        })
    }

    /// The same images zero-padded by `pad` pixels on every side (MNIST 28 -> 32 for a patch
    /// grid); padding is pixel value 0, before normalisation.
    pub fn padded(&self, pad: usize) -> Result<Self> {
        let [c, h, w] = self.shape;
        let (ph, pw) = (h + 2 * pad, w + 2 * pad);
        let mut pixels = vec![0u8; self.len() * c * ph * pw];
        for (i, dst) in pixels.chunks_exact_mut(c * ph * pw).enumerate() {
            let src = self.raw(i).ok_or_else(|| DataError::Config(format!("{}: image {i} missing", self.name)))?;
            for ch in 0..c {
                for y in 0..h {
                    let d = (ch * ph + y + pad) * pw + pad;
                    dst[d..d + w].copy_from_slice(&src[(ch * h + y) * w..(ch * h + y + 1) * w]);
                }
            }
        }
        Ok(Self { pixels, shape: [c, ph, pw], ..self.clone() })
    }

    /// Count of samples per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.num_classes];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }
}

impl Dataset for ImageDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn sample_shape(&self) -> [usize; 3] {
        self.shape
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn load(&self, index: usize, rng: &mut StdRng, out: &mut [f32]) -> Result<u32> {
        let [c, h, w] = self.shape;
        let src = self
            .raw(index)
            .ok_or_else(|| DataError::Config(format!("{}: index {index} out of range 0..{}", self.name, self.len())))?;
        let (dy, dx, flip, pad) = match self.transform.augment {
            Augment::None => (0, 0, false, 0),
            Augment::PadCropFlip { pad } => {
                (rng.random_range(0..=2 * pad), rng.random_range(0..=2 * pad), rng.random_bool(0.5), pad)
            }
            Augment::PadCrop { pad } => (rng.random_range(0..=2 * pad), rng.random_range(0..=2 * pad), false, pad),
        };
        for ch in 0..c {
            let (m, s) = (
                self.transform.mean.get(ch).copied().unwrap_or(0.0),
                self.transform.std.get(ch).copied().unwrap_or(1.0),
            );
            for y in 0..h {
                for x in 0..w {
                    // Position in the padded image, then back to the source (zero outside).
                    let sy = (y + dy) as isize - pad as isize;
                    let sx0 = if flip { w - 1 - x } else { x };
                    let sx = (sx0 + dx) as isize - pad as isize;
                    let v = if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                        f32::from(src[(ch * h + sy as usize) * w + sx as usize]) / 255.0
                    } else {
                        0.0
                    };
                    out[(ch * h + y) * w + x] = (v - m) / s;
                }
            }
        }
        Ok(self.labels[index])
    }
}

/// One batch: NCHW `f32` images, `u32` labels and the dataset indices they came from.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, C, H, W]` images.
    pub images: Tensor,
    /// `[B]` labels.
    pub labels: Tensor,
    /// Dataset index of each sample.
    pub indices: Vec<usize>,
}

/// Streams batches over a [`Dataset`], seeded and reshuffled each epoch.
#[derive(Debug, Clone)]
pub struct Batcher {
    batch_size: usize,
    shuffle: bool,
    drop_last: bool,
    rng: SeededRng,
    device: Device,
}

impl Batcher {
    /// A batcher of `batch_size` samples on `device`; shuffles with `seed` when `shuffle`.
    pub fn new(batch_size: usize, shuffle: bool, seed: u64, device: Device) -> Result<Self> {
        if batch_size == 0 {
            return Err(DataError::Config("batch size must be at least 1".into()));
        }
        Ok(Self { batch_size, shuffle, drop_last: false, rng: SeededRng::new(seed), device })
    }

    /// Drops the last incomplete batch of each epoch (training convention).
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// The order in which epoch `epoch` visits the dataset's indices.
    pub fn order(&self, len: usize, epoch: u64) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..len).collect();
        if self.shuffle {
            idx.shuffle(&mut self.rng.stream("shuffle", epoch));
        }
        idx
    }

    /// Number of batches per epoch for a dataset of `len` samples.
    pub fn num_batches(&self, len: usize) -> usize {
        if self.drop_last { len / self.batch_size } else { len.div_ceil(self.batch_size) }
    }

    /// The batches of epoch `epoch`, starting at batch `first` (for resuming mid-epoch).
    pub fn epoch<'a, D: Dataset>(&'a self, data: &'a D, epoch: u64, first: usize) -> Result<BatchIter<'a, D>> {
        if data.is_empty() {
            return Err(DataError::Config("cannot batch an empty dataset".into()));
        }
        let order = self.order(data.len(), epoch);
        Ok(BatchIter { batcher: self, data, order, epoch, next: first, end: self.num_batches(data.len()) })
    }
}

/// Iterator over one epoch's batches; see [`Batcher::epoch`].
#[derive(Debug)]
pub struct BatchIter<'a, D: Dataset> {
    batcher: &'a Batcher,
    data: &'a D,
    order: Vec<usize>,
    epoch: u64,
    next: usize,
    end: usize,
}

impl<D: Dataset> BatchIter<'_, D> {
    fn make(&self, b: usize) -> Result<Batch> {
        let bs = self.batcher.batch_size;
        let indices: Vec<usize> = self.order[b * bs..((b + 1) * bs).min(self.order.len())].to_vec();
        let shape = self.data.sample_shape();
        let per: usize = shape.iter().product();
        let mut buf = vec![0f32; indices.len() * per];
        let n = self.data.len() as u64;
        let labels = buf
            .par_chunks_mut(per)
            .zip(indices.par_iter())
            .map(|(out, &i)| {
                let mut rng = self.batcher.rng.stream("sample", self.epoch * n + i as u64);
                self.data.load(i, &mut rng, out)
            })
            .collect::<Result<Vec<u32>>>()?;
        let dev = &self.batcher.device;
        let images = Tensor::from_vec(buf, (indices.len(), shape[0], shape[1], shape[2]), dev)?;
        let labels = Tensor::from_vec(labels, indices.len(), dev)?;
        Ok(Batch { images, labels, indices })
    }
}

impl<D: Dataset> Iterator for BatchIter<'_, D> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let b = self.next;
        self.next += 1;
        Some(self.make(b))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end.saturating_sub(self.next);
        (left, Some(left))
    }
}

impl<D: Dataset> ExactSizeIterator for BatchIter<'_, D> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize) -> ImageDataset {
        let pixels = (0..n * 4).map(|i| (i % 256) as u8).collect();
        let labels = (0..n as u32).map(|i| i % 3).collect();
        ImageDataset::new("toy", pixels, [1, 2, 2], labels, 3).expect("valid")
    }

    #[test]
    fn padding_surrounds_each_image_with_zeros() {
        let d = toy(2).padded(1).expect("pad");
        assert_eq!(d.sample_shape(), [1, 4, 4]);
        assert_eq!(d.raw(1).expect("img"), &[0, 0, 0, 0, 0, 4, 5, 0, 0, 6, 7, 0, 0, 0, 0, 0]);
        assert_eq!(d.labels(), toy(2).labels());
    }

    #[test]
    fn epochs_cover_every_sample_once_and_reshuffle() {
        let d = toy(10);
        let b = Batcher::new(3, true, 7, Device::Cpu).expect("batcher");
        let e0: Vec<usize> = b.epoch(&d, 0, 0).expect("e").flat_map(|x| x.expect("batch").indices).collect();
        let e1: Vec<usize> = b.epoch(&d, 1, 0).expect("e").flat_map(|x| x.expect("batch").indices).collect();
        let mut s = e0.clone();
        s.sort();
        assert_eq!(s, (0..10).collect::<Vec<_>>());
        assert_ne!(e0, e1, "each epoch reshuffles");
        assert_eq!(b.epoch(&d, 0, 0).expect("e").len(), 4);
        assert_eq!(b.clone().drop_last(true).epoch(&d, 0, 0).expect("e").len(), 3);
    }

    #[test]
    fn same_seed_same_batches_and_resume_mid_epoch() {
        let d = toy(10)
            .with_transform(PixelTransform { augment: Augment::PadCropFlip { pad: 1 }, ..Default::default() })
            .expect("t");
        let b = Batcher::new(4, true, 3, Device::Cpu).expect("batcher");
        let full: Vec<Vec<f32>> = b
            .epoch(&d, 2, 0)
            .expect("e")
            .map(|x| x.expect("batch").images.flatten_all().expect("f").to_vec1().expect("v"))
            .collect();
        let resumed: Vec<Vec<f32>> = b
            .epoch(&d, 2, 1)
            .expect("e")
            .map(|x| x.expect("batch").images.flatten_all().expect("f").to_vec1().expect("v"))
            .collect();
        assert_eq!(&full[1..], &resumed[..]);
    }

    #[test]
    fn pixels_scale_and_normalise() {
        let d = ImageDataset::new("one", vec![0, 255, 51, 102], [1, 2, 2], vec![1], 2)
            .expect("valid")
            .with_transform(PixelTransform { augment: Augment::None, mean: vec![0.5], std: vec![0.5] })
            .expect("t");
        let b = Batcher::new(1, false, 0, Device::Cpu).expect("batcher");
        let batch = b.epoch(&d, 0, 0).expect("e").next().expect("one").expect("ok");
        let v: Vec<f32> = batch.images.flatten_all().expect("f").to_vec1().expect("v");
        let want = [-1.0, 1.0, 0.2 / 0.5 - 1.0, 0.4 / 0.5 - 1.0];
        for (a, w) in v.iter().zip(want) {
            assert!((a - w).abs() < 1e-6, "{v:?}");
        }
        assert_eq!(batch.images.dims(), &[1, 1, 2, 2]);
    }

    #[test]
    fn pad_crop_flip_keeps_content_and_shape() {
        // With pad 0 the crop is the identity and only the flip acts.
        let d = ImageDataset::new("one", vec![1, 2, 3, 4], [1, 2, 2], vec![0], 1)
            .expect("valid")
            .with_transform(PixelTransform { augment: Augment::PadCropFlip { pad: 0 }, ..Default::default() })
            .expect("t");
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..20 {
            let mut out = [0f32; 4];
            d.load(0, &mut SeededRng::new(seed).stream("x", 0), &mut out).expect("load");
            seen.insert(out.map(|v| (v * 255.0).round() as u8));
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![[1, 2, 3, 4], [2, 1, 4, 3]]);
    }

    #[test]
    fn pad_crop_shifts_without_flipping() {
        // Distinct values: every output must be the image shifted by (dy, dx) in {-1, 0, 1}^2
        // with zeros entering, never a mirror image.
        let src: Vec<u8> = (1..=9).map(|v| v * 20).collect();
        let d = ImageDataset::new("one", src.clone(), [1, 3, 3], vec![0], 1)
            .expect("valid")
            .with_transform(PixelTransform { augment: Augment::PadCrop { pad: 1 }, ..Default::default() })
            .expect("t");
        let shifted = |dy: isize, dx: isize| -> Vec<u8> {
            (0..9)
                .map(|i| {
                    let (y, x) = (i as isize / 3 + dy, i as isize % 3 + dx);
                    if (0..3).contains(&y) && (0..3).contains(&x) { src[(y * 3 + x) as usize] } else { 0 }
                })
                .collect()
        };
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..40 {
            let mut out = [0f32; 9];
            d.load(0, &mut SeededRng::new(seed).stream("x", 0), &mut out).expect("load");
            let got: Vec<u8> = out.iter().map(|v| (v * 255.0).round() as u8).collect();
            let shift =
                (-1..=1).flat_map(|dy| (-1..=1).map(move |dx| (dy, dx))).find(|&(dy, dx)| shifted(dy, dx) == got);
            assert!(shift.is_some(), "seed {seed}: {got:?} is not a shift");
            seen.insert(shift);
        }
        assert!(seen.len() > 4, "crops barely vary: {seen:?}");
    }

    #[test]
    fn bad_configs_are_errors() {
        assert!(Batcher::new(0, false, 0, Device::Cpu).is_err());
        assert!(ImageDataset::new("x", vec![0; 3], [1, 2, 2], vec![0], 1).is_err());
        assert!(ImageDataset::new("x", vec![0; 4], [1, 2, 2], vec![5], 2).is_err());
        assert!(toy(2).with_transform(PixelTransform { mean: vec![0.0, 0.0], ..Default::default() }).is_err());
    }
}
