//! Super-resolution pairs: HR images and their MATLAB-bicubic LR counterparts.
//!
//! The HR image is cropped to a multiple of the scale (MATLAB `modcrop`, top-left kept), the LR
//! image is `imresize(HR, 1/scale, 'bicubic')` on `uint8` ([`crate::bicubic::imresize_u8`]).
//! Training draws random aligned patches (LR `p x p` at `(y, x)`, HR `sp x sp` at `(sy, sx)`) with
//! random horizontal flips, vertical flips and 90-degree transposes, as EDSR does. Values are
//! RGB in [0, 1]; grayscale files are replicated to RGB (their Y is then the grey value).

use crate::bicubic::imresize_u8;
use crate::decode;
use crate::error::{DataError, Result};
use candle_core::{Device, Tensor};
use rand::Rng;
use rand::rngs::StdRng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// One HR/LR pair, both planar RGB `u8`.
#[derive(Debug, Clone)]
pub struct SrPair {
    /// The file the HR image came from.
    pub path: PathBuf,
    /// HR pixels, 3 x `height` x `width`.
    pub hr: Vec<u8>,
    /// LR pixels, 3 x `height/scale` x `width/scale`.
    pub lr: Vec<u8>,
    /// HR height (a multiple of the scale).
    pub height: usize,
    /// HR width (a multiple of the scale).
    pub width: usize,
}

/// A folder of HR images with their bicubic LR versions at one scale.
#[derive(Debug, Clone)]
pub struct SrPairs {
    /// The pairs, in file-name order.
    pub pairs: Vec<SrPair>,
    /// The downscaling factor (2, 3, 4, ...).
    pub scale: usize,
}

/// One batch of aligned patches: `[B, 3, p, p]` LR and `[B, 3, sp, sp]` HR, in [0, 1].
#[derive(Debug, Clone)]
pub struct SrBatch {
    /// Low-resolution input.
    pub lr: Tensor,
    /// High-resolution target.
    pub hr: Tensor,
}

impl SrPair {
    /// The image's name: its file name without the extension.
    pub fn name(&self) -> String {
        self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// The pair of planar RGB `hr` (`3 x height x width`): cropped to a multiple of `scale`
    /// (top-left kept), LR by MATLAB bicubic.
    pub fn from_hr(path: PathBuf, hr: &[u8], height: usize, width: usize, scale: usize) -> Result<Self> {
        let (hh, ww) = (height - height % scale.max(1), width - width % scale.max(1));
        if scale == 0 || hh == 0 || ww == 0 || hr.len() != 3 * height * width {
            return Err(DataError::format(
                &path,
                format!("{} values for a 3 x {height} x {width} image at scale {scale}", hr.len()),
            ));
        }
        let mut crop = Vec::with_capacity(3 * hh * ww);
        for c in 0..3 {
            for y in 0..hh {
                crop.extend_from_slice(&hr[(c * height + y) * width..(c * height + y) * width + ww]);
            }
        }
        let lr = imresize_u8(&crop, 3, hh, ww, hh / scale, ww / scale)?;
        Ok(SrPair { path, hr: crop, lr, height: hh, width: ww })
    }

    /// A grayscale copy (BT.601 luma `0.299 R + 0.587 G + 0.114 B`, rounded, in every channel),
    /// named `<name>-gray`, LR downscaled from it.
    pub fn grayscale(&self, scale: usize) -> Result<Self> {
        let n = self.height * self.width;
        let (r, g, b) = (&self.hr[..n], &self.hr[n..2 * n], &self.hr[2 * n..]);
        let y: Vec<u8> = (0..n)
            .map(|i| (0.299 * f64::from(r[i]) + 0.587 * f64::from(g[i]) + 0.114 * f64::from(b[i])).round() as u8)
            .collect();
        Self::from_hr(self.renamed("gray"), &[y.as_slice(), &y, &y].concat(), self.height, self.width, scale)
    }

    /// A copy downscaled by `factor` (MATLAB bicubic; coarser detail per pixel), named
    /// `<name>-x<factor>`, LR downscaled from it.
    pub fn downscaled(&self, factor: usize, scale: usize) -> Result<Self> {
        let (h, w) = (self.height / factor.max(1), self.width / factor.max(1));
        if factor == 0 || h < scale || w < scale {
            return Err(DataError::format(
                &self.path,
                format!("cannot downscale {}x{} by {factor}", self.height, self.width),
            ));
        }
        let hr = imresize_u8(&self.hr, 3, self.height, self.width, h, w)?;
        Self::from_hr(self.renamed(&format!("x{factor}")), &hr, h, w, scale)
    }

    fn renamed(&self, suffix: &str) -> PathBuf {
        let ext = self.path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
        self.path.with_file_name(format!("{}-{suffix}{ext}", self.name()))
    }
}

impl SrPairs {
    /// Loads every PNG/JPEG in `dir` (sorted by name), decoding in parallel.
    pub fn load_dir(dir: &Path, scale: usize) -> Result<Self> {
        if scale < 1 {
            return Err(DataError::Config("SR scale must be at least 1".into()));
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| DataError::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && decode::is_image(p))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(DataError::Empty { path: dir.to_path_buf(), msg: "no PNG or JPEG images here".into() });
        }
        let pairs = files.par_iter().map(|p| Self::pair(p, scale)).collect::<Result<Vec<_>>>()?;
        Ok(Self { pairs, scale })
    }

    fn pair(path: &Path, scale: usize) -> Result<SrPair> {
        let (px, h, w) = decode::to_chw_rgb(&decode::open(path)?);
        if h < scale || w < scale {
            return Err(DataError::format(path, format!("image {h}x{w} is smaller than the scale {scale}")));
        }
        SrPair::from_hr(path.to_path_buf(), &px, h, w, scale)
    }

    /// Checks every LR image holds at least one `lr_patch x lr_patch` patch.
    pub fn check_patch(&self, lr_patch: usize) -> Result<()> {
        if lr_patch == 0 {
            return Err(DataError::Config("patch size must be at least 1".into()));
        }
        for p in &self.pairs {
            let (lh, lw) = (p.height / self.scale, p.width / self.scale);
            if lh < lr_patch || lw < lr_patch {
                return Err(DataError::format(
                    &p.path,
                    format!("LR image {lh}x{lw} is smaller than the patch size {lr_patch}"),
                ));
            }
        }
        Ok(())
    }

    /// A batch of `batch` random aligned patches, each from a uniformly chosen image.
    pub fn patch_batch(&self, rng: &mut StdRng, batch: usize, lr_patch: usize, device: &Device) -> Result<SrBatch> {
        self.check_patch(lr_patch)?;
        let s = self.scale;
        let hp = lr_patch * s;
        let mut lr = Vec::with_capacity(batch * 3 * lr_patch * lr_patch);
        let mut hr = Vec::with_capacity(batch * 3 * hp * hp);
        for _ in 0..batch {
            let p = &self.pairs[rng.random_range(0..self.pairs.len())];
            let (lh, lw) = (p.height / s, p.width / s);
            let y = rng.random_range(0..=lh - lr_patch);
            let x = rng.random_range(0..=lw - lr_patch);
            let geo =
                Geometry { hflip: rng.random_bool(0.5), vflip: rng.random_bool(0.5), transpose: rng.random_bool(0.5) };
            crop(&p.lr, lh, lw, y, x, lr_patch, geo, &mut lr);
            crop(&p.hr, p.height, p.width, y * s, x * s, hp, geo, &mut hr);
        }
        Ok(SrBatch {
            lr: Tensor::from_vec(lr, (batch, 3, lr_patch, lr_patch), device)?,
            hr: Tensor::from_vec(hr, (batch, 3, hp, hp), device)?,
        })
    }

    /// The whole pair `i` as `([1, 3, h, w] LR, [1, 3, sh, sw] HR)` tensors in [0, 1].
    pub fn full(&self, i: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let p = self.pairs.get(i).ok_or_else(|| DataError::Config(format!("pair {i} of {}", self.pairs.len())))?;
        let to = |v: &[u8], h: usize, w: usize| {
            Tensor::from_vec(v.iter().map(|&b| f32::from(b) / 255.0).collect::<Vec<_>>(), (1, 3, h, w), device)
        };
        Ok((to(&p.lr, p.height / self.scale, p.width / self.scale)?, to(&p.hr, p.height, p.width)?))
    }
}

/// The dihedral augmentation of EDSR: flips and a transpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    hflip: bool,
    vflip: bool,
    transpose: bool,
}

/// Appends the `n x n` patch at `(y, x)` of a planar 3 x h x w image, transformed by `geo`, as
/// `f32` in [0, 1].
#[allow(clippy::too_many_arguments)]
fn crop(src: &[u8], h: usize, w: usize, y: usize, x: usize, n: usize, geo: Geometry, out: &mut Vec<f32>) {
    for c in 0..3 {
        for i in 0..n {
            for j in 0..n {
                let (mut a, mut b) = if geo.transpose { (j, i) } else { (i, j) };
                if geo.vflip {
                    a = n - 1 - a;
                }
                if geo.hflip {
                    b = n - 1 - b;
                }
                out.push(f32::from(src[(c * h + y + a) * w + x + b]) / 255.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use compress_core::rng::SeededRng;

    /// A grayscale copy holds BT.601 luma in every channel; a downscaled copy halves the sides
    /// (then crops to the scale); both keep the pair's name with a suffix and its LR relation.
    #[test]
    fn variants_of_a_pair() {
        let dir = tempfile::tempdir().expect("tmp");
        write_png(dir.path(), "a.png", 22, 18);
        let set = SrPairs::load_dir(dir.path(), 2).expect("load");
        let p = &set.pairs[0];
        let g = p.grayscale(2).expect("gray");
        assert_eq!((g.name().as_str(), g.height, g.width), ("a-gray", 18, 22));
        let n = g.height * g.width;
        assert!(g.hr[..n] == g.hr[n..2 * n] && g.hr[..n] == g.hr[2 * n..]);
        let i = 5 * 22 + 7;
        let want = 0.299 * f64::from(p.hr[i]) + 0.587 * f64::from(p.hr[n + i]) + 0.114 * f64::from(p.hr[2 * n + i]);
        assert_eq!(g.hr[i], want.round() as u8);
        assert_eq!(g.lr, imresize_u8(&g.hr, 3, 18, 22, 9, 11).expect("lr"));
        let d = p.downscaled(2, 2).expect("half");
        // 18 x 22 halves to 9 x 11, cropped to 8 x 10 for the scale.
        assert_eq!((d.name().as_str(), d.height, d.width, d.lr.len()), ("a-x2", 8, 10, 3 * 4 * 5));
        assert!(p.downscaled(20, 2).is_err());
        assert!(SrPair::from_hr(PathBuf::from("b.png"), &[0; 5], 2, 2, 2).is_err());
    }

    fn write_png(dir: &Path, name: &str, w: u32, h: u32) -> PathBuf {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 7 % 256) as u8, (y * 5 % 256) as u8, ((x + y) % 256) as u8])
        });
        let p = dir.join(name);
        img.save(&p).expect("save png");
        p
    }

    #[test]
    fn modcrop_and_lr_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_png(dir.path(), "a.png", 31, 22);
        let s = SrPairs::load_dir(dir.path(), 3).expect("load");
        let p = &s.pairs[0];
        assert_eq!((p.height, p.width), (21, 30));
        assert_eq!(p.lr.len(), 3 * 7 * 10);
    }

    #[test]
    fn patches_are_aligned() {
        // Both patches of a pair must show the same region under the same flips/transpose.
        let dir = tempfile::tempdir().expect("tempdir");
        write_png(dir.path(), "a.png", 40, 40);
        let s = SrPairs::load_dir(dir.path(), 2).expect("load");
        let mut rng = SeededRng::new(1).stream("p", 0);
        let b = s.patch_batch(&mut rng, 4, 8, &Device::Cpu).expect("batch");
        assert_eq!(b.lr.dims(), &[4, 3, 8, 8]);
        assert_eq!(b.hr.dims(), &[4, 3, 16, 16]);
        // Average-pooling the HR patch approximates the LR patch far better than chance.
        let pooled = b.hr.avg_pool2d(2).expect("pool");
        let err = (pooled - &b.lr).expect("d").abs().expect("a").mean_all().expect("m").to_scalar::<f32>().expect("s");
        assert!(err < 0.05, "misaligned patches: mean abs diff {err}");
    }

    #[test]
    fn geometry_is_a_dihedral_map() {
        let src: Vec<u8> = (0..3 * 4).map(|v| v as u8).collect(); // 3 x 2 x 2
        let mut out = Vec::new();
        crop(&src, 2, 2, 0, 0, 2, Geometry { hflip: false, vflip: false, transpose: true }, &mut out);
        assert_eq!(&out[..4].iter().map(|v| (v * 255.0).round() as u8).collect::<Vec<_>>(), &[0, 2, 1, 3]);
        out.clear();
        crop(&src, 2, 2, 0, 0, 2, Geometry { hflip: true, vflip: true, transpose: false }, &mut out);
        assert_eq!(&out[..4].iter().map(|v| (v * 255.0).round() as u8).collect::<Vec<_>>(), &[3, 2, 1, 0]);
    }

    #[test]
    fn too_small_empty_and_corrupt_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(SrPairs::load_dir(dir.path(), 2), Err(DataError::Empty { .. })));
        write_png(dir.path(), "small.png", 10, 10);
        let s = SrPairs::load_dir(dir.path(), 2).expect("load");
        let e = s.check_patch(8).expect_err("5x5 LR < 8");
        assert!(e.to_string().contains("small.png") && e.to_string().contains("smaller than the patch"), "{e}");
        let p = dir.path().join("broken.png");
        let bytes = std::fs::read(dir.path().join("small.png")).expect("r");
        std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("w");
        let e = SrPairs::load_dir(dir.path(), 2).expect_err("truncated png");
        assert!(e.to_string().contains("broken.png"), "{e}");
    }
}
