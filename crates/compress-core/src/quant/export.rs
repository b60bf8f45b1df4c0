//! Integer export of a fake-quantized tensor: `b`-bit codes (packed 8 / 4 / 2 / 1 per byte for
//! 1, 2, 4 and 8 bits, one byte each otherwise), per-tensor or per-channel (axis 0) `s` and zero
//! point, with `value = (code - zero_point) / s`, the very operation the fake quantizer ends
//! with, so `dequantize` reproduces it bit for bit.

use super::affine::AffineGrid;
use super::{QuantError, Result, check_bits};
use candle_core::{DType, Device, Tensor};

/// Codes, scales and zero points of a quantized tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedTensor {
    /// Shape of the tensor.
    pub shape: Vec<usize>,
    /// Bits per code.
    pub bits: u32,
    /// Packed codes, row-major.
    pub codes: Vec<u8>,
    /// `s` (levels per unit) per tensor (one entry) or per channel of axis 0.
    pub scale: Vec<f32>,
    /// Zero point per tensor or per channel: the code of the value 0.
    pub zero_point: Vec<i32>,
}

/// The largest zero point magnitude: `code - zero_point` stays exact in f32 (a grid whose lower
/// bound sits 2^24 levels from zero is not a quantization grid).
pub const MAX_ZERO_POINT: u32 = 1 << 24;

fn per_byte(bits: u32) -> usize {
    if 8 % bits == 0 { (8 / bits) as usize } else { 1 }
}

fn pack(codes: &[u8], bits: u32) -> Vec<u8> {
    let k = per_byte(bits);
    let width = if k == 1 { 8 } else { bits };
    codes.chunks(k).map(|c| c.iter().enumerate().fold(0u8, |b, (i, &v)| b | (v << (i as u32 * width)))).collect()
}

fn unpack(bytes: &[u8], bits: u32, n: usize) -> Vec<u8> {
    let k = per_byte(bits);
    if k == 1 {
        return bytes[..n].to_vec();
    }
    let mask = ((1u16 << bits) - 1) as u8;
    (0..n).map(|i| (bytes[i / k] >> ((i % k) as u32 * bits)) & mask).collect()
}

impl QuantizedTensor {
    /// Exports `x` quantized with the affine grid of `lower < upper` (one bound per tensor, or
    /// `[C, 1, ...]` bounds per channel of axis 0).
    pub fn affine(x: &Tensor, lower: &Tensor, upper: &Tensor, bits: u32) -> Result<Self> {
        let grid = AffineGrid::new(&x.detach(), &lower.detach(), &upper.detach(), bits)?;
        let channels = grid.s.elem_count();
        let dims = x.dims().to_vec();
        if channels != 1 && (dims.is_empty() || dims[0] != channels) {
            return Err(QuantError::Malformed(format!("{channels} bounds for a tensor of shape {dims:?}")));
        }
        let k: Vec<f32> = grid.k.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let k_min: Vec<f32> = grid.k_min.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let scale: Vec<f32> = grid.s.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let per = k.len() / channels.max(1);
        let max = (1u32 << bits) - 1;
        let mut codes = Vec::with_capacity(k.len());
        for (i, v) in k.iter().enumerate() {
            let c = v - k_min[i / per.max(1)];
            if !(0.0..=max as f32).contains(&c) {
                // Both s l and s u on a .5 tie rounding outwards give 2^b + 1 levels: the fake
                // quantizer (like the official code) has one level more than b bits can hold.
                return Err(QuantError::Malformed(format!(
                    "code {c} outside 0..={max}: the bounds put both ends of the grid on a rounding tie, \
                     giving 2^{bits} + 1 levels"
                )));
            }
            codes.push(c as u8);
        }
        let zero_point = k_min.iter().map(|m| -(*m as i32)).collect();
        Ok(Self { shape: dims, bits, codes: pack(&codes, bits), scale, zero_point })
    }

    /// Exports `x` quantized by the asymmetric quantizer of GDFQ / IntraQ
    /// ([`super::asym::asym_fake_quant`], one `lo <= hi` per tensor or per channel of axis 0):
    /// code `q + 2^(b-1)`, zero point `2^(b-1) - z`, scale `s`, in the quantizer's own f32
    /// arithmetic, so [`QuantizedTensor::dequantize`] gives its values bit for bit.
    pub fn asym(x: &Tensor, lo: &Tensor, hi: &Tensor, bits: u32) -> Result<Self> {
        check_bits(bits)?;
        let dims = x.dims().to_vec();
        let l: Vec<f32> = lo.detach().flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let u: Vec<f32> = hi.detach().flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let channels = l.len();
        if channels == 0 || u.len() != channels || (channels != 1 && dims.first() != Some(&channels)) {
            return Err(QuantError::Malformed(format!("{channels} / {} range ends for shape {dims:?}", u.len())));
        }
        if let Some((a, b)) = l.iter().zip(&u).find(|(a, b)| !(a.is_finite() && b.is_finite() && a <= b)) {
            return Err(QuantError::Bounds { lower: f64::from(*a), upper: f64::from(*b) });
        }
        let v: Vec<f32> = x.detach().flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let (n, half) = (((1u32 << bits) - 1) as f32, (1u32 << (bits - 1)) as f32);
        let params: Vec<(f32, f32)> = l
            .iter()
            .zip(&u)
            .map(|(&l, &u)| {
                let s = n / (u - l).max(1e-8);
                (s, (s * l).round_ties_even() + half)
            })
            .collect();
        let per = v.len() / channels;
        let codes: Vec<u8> = v
            .iter()
            .enumerate()
            .map(|(i, &xi)| {
                let (s, z) = params[if channels == 1 { 0 } else { i / per.max(1) }];
                ((s * xi - z).round_ties_even().clamp(-half, half - 1.0) + half) as u8
            })
            .collect();
        let zero_point: Vec<i32> = params.iter().map(|&(_, z)| half as i32 - z as i32).collect();
        if let Some(z) = zero_point.iter().find(|z| z.unsigned_abs() > MAX_ZERO_POINT) {
            return Err(QuantError::Malformed(format!("zero point {z} is beyond +-2^24 (not exact in f32)")));
        }
        let scale = params.iter().map(|&(s, _)| s).collect();
        Ok(Self { shape: dims, bits, codes: pack(&codes, bits), scale, zero_point })
    }

    /// Checks sizes and code ranges (data read from a file must pass before use).
    pub fn validate(&self) -> Result<()> {
        check_bits(self.bits)?;
        let n = self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| {
            QuantError::Malformed(format!("shape {:?} has more values than memory can hold", self.shape))
        })?;
        let k = per_byte(self.bits);
        if self.codes.len() != n.div_ceil(k) {
            return Err(QuantError::Malformed(format!("{} code bytes for {n} values", self.codes.len())));
        }
        let ch = self.scale.len();
        if ch == 0 || ch != self.zero_point.len() || (ch > 1 && self.shape.first() != Some(&ch)) {
            return Err(QuantError::Malformed(format!("{ch} scales, {} zero points", self.zero_point.len())));
        }
        if self.scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(QuantError::Malformed("scales must be finite and positive".into()));
        }
        if let Some(z) = self.zero_point.iter().find(|z| z.unsigned_abs() > MAX_ZERO_POINT) {
            return Err(QuantError::Malformed(format!("zero point {z} is beyond +-2^24 (not exact in f32)")));
        }
        if k == 1 && self.codes.iter().any(|c| u32::from(*c) >= 1 << self.bits) {
            return Err(QuantError::Malformed(format!("a code exceeds {} bits", self.bits)));
        }
        Ok(())
    }

    /// The safetensors bytes of this export: `codes` (u8), `scale` (f32), `zero_point` (i32),
    /// `shape` (u64) and `bits` (u32).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let le32 = |v: &mut Vec<u8>, x: [u8; 4]| v.extend_from_slice(&x);
        let (mut scale, mut zp, mut shape) = (Vec::new(), Vec::new(), Vec::new());
        self.scale.iter().for_each(|x| le32(&mut scale, x.to_le_bytes()));
        self.zero_point.iter().for_each(|x| le32(&mut zp, x.to_le_bytes()));
        self.shape.iter().for_each(|&x| shape.extend_from_slice(&(x as u64).to_le_bytes()));
        let bits = self.bits.to_le_bytes();
        let err = |e: safetensors::SafeTensorError| QuantError::Malformed(e.to_string());
        use safetensors::Dtype;
        fn view(dt: Dtype, n: usize, b: &[u8]) -> Result<safetensors::tensor::TensorView<'_>> {
            safetensors::tensor::TensorView::new(dt, vec![n], b).map_err(|e| QuantError::Malformed(e.to_string()))
        }
        let views = vec![
            ("codes", view(Dtype::U8, self.codes.len(), &self.codes)?),
            ("scale", view(Dtype::F32, self.scale.len(), &scale)?),
            ("zero_point", view(Dtype::I32, self.zero_point.len(), &zp)?),
            ("shape", view(Dtype::U64, self.shape.len(), &shape)?),
            ("bits", view(Dtype::U32, 1, &bits)?),
        ];
        safetensors::serialize(views, None).map_err(err)
    }

    /// Parses [`QuantizedTensor::to_bytes`]'s output and validates it: anything malformed is an
    /// error, never a panic or a huge allocation.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        use safetensors::Dtype;
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| QuantError::Malformed(e.to_string()))?;
        let get = |name: &str, dt: Dtype| -> Result<Vec<u8>> {
            let t = st.tensor(name).map_err(|e| QuantError::Malformed(format!("{name}: {e}")))?;
            if t.dtype() != dt || t.shape().len() != 1 {
                return Err(QuantError::Malformed(format!("{name} must be a 1-D {dt:?} tensor")));
            }
            Ok(t.data().to_vec())
        };
        let words = |b: Vec<u8>| b.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect::<Vec<_>>();
        let shape = get("shape", Dtype::U64)?
            .chunks_exact(8)
            .map(|c| {
                let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                usize::try_from(v).map_err(|_| QuantError::Malformed(format!("dimension {v} is too large")))
            })
            .collect::<Result<Vec<usize>>>()?;
        let bits = words(get("bits", Dtype::U32)?);
        let [bits] = bits.as_slice() else { return Err(QuantError::Malformed("bits must hold one value".into())) };
        let q = Self {
            shape,
            bits: u32::from_le_bytes(*bits),
            codes: get("codes", Dtype::U8)?,
            scale: words(get("scale", Dtype::F32)?).into_iter().map(f32::from_le_bytes).collect(),
            zero_point: words(get("zero_point", Dtype::I32)?).into_iter().map(i32::from_le_bytes).collect(),
        };
        q.validate()?;
        Ok(q)
    }

    /// The codes, unpacked.
    pub fn unpacked(&self) -> Result<Vec<u8>> {
        self.validate()?;
        Ok(unpack(&self.codes, self.bits, self.shape.iter().product()))
    }

    /// `(code - zero_point) / s` as an f32 tensor on `device`.
    pub fn dequantize(&self, device: &Device) -> Result<Tensor> {
        let codes = self.unpacked()?;
        let per = codes.len() / self.scale.len();
        let v: Vec<f32> = codes
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let ch = i / per.max(1);
                (i64::from(*c) - i64::from(self.zero_point[ch])) as f32 / self.scale[ch]
            })
            .collect();
        Ok(Tensor::from_vec(v, self.shape.clone(), device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::affine_fake_quant;

    fn data(n: usize) -> Tensor {
        let v: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.4) * 3.0).collect();
        Tensor::from_vec(v, (4, n / 4), &Device::Cpu).unwrap()
    }

    #[test]
    fn asym_export_dequantizes_to_the_asym_quantizer_bit_for_bit() {
        let x = data(400);
        let (lo, hi) = crate::quant::asym::per_channel_minmax(&x).unwrap();
        let (lo_t, hi_t) = (Tensor::new(-0.7f32, &Device::Cpu).unwrap(), Tensor::new(1.9f32, &Device::Cpu).unwrap());
        // A range inside the data's, so codes clamp at both ends.
        let (lo_n, hi_n) = (Tensor::new(-0.5f32, &Device::Cpu).unwrap(), Tensor::new(1.0f32, &Device::Cpu).unwrap());
        for bits in 1..=8 {
            for (l, u) in [(&lo, &hi), (&lo_t, &hi_t), (&lo_n, &hi_n)] {
                let want = crate::quant::asym::asym_fake_quant(&x, l, u, bits).unwrap();
                let q = QuantizedTensor::asym(&x, l, u, bits).unwrap();
                let q = QuantizedTensor::from_bytes(&q.to_bytes().unwrap()).unwrap();
                let got = q.dequantize(&Device::Cpu).unwrap();
                let (a, b): (Vec<f32>, Vec<f32>) =
                    (want.flatten_all().unwrap().to_vec1().unwrap(), got.flatten_all().unwrap().to_vec1().unwrap());
                assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()), "bits {bits}");
                assert!(q.unpacked().unwrap().iter().all(|&c| u32::from(c) < 1 << bits));
            }
        }
        let bad = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        assert!(QuantizedTensor::asym(&x, &bad, &bad, 4).is_err(), "2 ranges for 4 channels");
    }

    #[test]
    fn exports_refuse_ranges_that_do_not_fit_the_tensor() {
        let x = data(400);
        let t = |v: &[f32]| Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap();
        let malformed = |r: Result<QuantizedTensor>| matches!(r, Err(QuantError::Malformed(_)));
        let bounds = |r: Result<QuantizedTensor>| matches!(r, Err(QuantError::Bounds { .. }));
        // Usable ranges, but 2 of them for 4 channels, or 4 lower ends and 3 upper ones.
        assert!(malformed(QuantizedTensor::asym(&x, &t(&[-1.0; 2]), &t(&[1.0; 2]), 4)));
        assert!(malformed(QuantizedTensor::asym(&x, &t(&[-1.0; 4]), &t(&[1.0; 3]), 4)));
        assert!(malformed(QuantizedTensor::asym(&x, &t(&[]), &t(&[]), 4)));
        // Reversed or non-finite ends, each alone.
        for (lo, hi) in [(0.5f32, 0.4f32), (f32::NAN, 1.0), (-1.0, f32::INFINITY), (f32::NEG_INFINITY, 1.0)] {
            assert!(bounds(QuantizedTensor::asym(&x, &t(&[lo]), &t(&[hi]), 4)), "[{lo}, {hi}]");
        }
        // Affine bounds per column (axis 1): not a per-channel export of axis 0, even where every
        // column has the same (exportable) bounds.
        let cols = Tensor::from_vec(vec![-1f32; 100], (1, 100), &Device::Cpu).unwrap();
        let (one, tops) = (Tensor::new(-1f32, &Device::Cpu).unwrap(), (&cols + 2.2).unwrap());
        QuantizedTensor::affine(&x, &one, &(&one + 2.2).unwrap(), 4).unwrap();
        assert!(malformed(QuantizedTensor::affine(&x, &cols, &tops, 4)));
    }

    #[test]
    fn codes_pack_eight_four_two_or_one_per_byte() {
        // 40 codes: 1, 2, 4 and 8 bits pack 8 / 4 / 2 / 1 per byte; 3, 5, 6, 7 bits one byte each.
        let x = data(40);
        // Inside the data's range, so both end codes occur.
        let (lo, hi) = (Tensor::new(-0.5f32, &Device::Cpu).unwrap(), Tensor::new(1.0f32, &Device::Cpu).unwrap());
        for (bits, bytes) in [(1, 5), (2, 10), (3, 40), (4, 20), (5, 40), (6, 40), (7, 40), (8, 40)] {
            let q = QuantizedTensor::affine(&x, &lo, &hi, bits).unwrap();
            assert_eq!(q.codes.len(), bytes, "{bits} bits");
            let codes = q.unpacked().unwrap();
            assert!(
                codes.contains(&0) && codes.iter().any(|&c| u32::from(c) == (1 << bits) - 1),
                "{bits} bits: {codes:?}"
            );
        }
    }

    #[test]
    fn dequantize_reproduces_the_fake_quantized_values_exactly() {
        let x = data(400);
        for bits in 1..=8 {
            let (l, u) = (Tensor::new(-0.7f32, &Device::Cpu).unwrap(), Tensor::new(1.9f32, &Device::Cpu).unwrap());
            let q = QuantizedTensor::affine(&x, &l, &u, bits).unwrap();
            assert_eq!(q.codes.len(), 400usize.div_ceil(per_byte(bits)), "{bits} bits packing");
            let fake: Vec<f32> = affine_fake_quant(&x, &l, &u, bits).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let back: Vec<f32> = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(fake, back, "{bits} bits");
            // Per channel.
            let l = Tensor::new(&[[-0.5f32], [-1.0], [-0.2], [-0.9]], &Device::Cpu).unwrap();
            let u = Tensor::new(&[[1.0f32], [0.4], [2.0], [1.1]], &Device::Cpu).unwrap();
            let q = QuantizedTensor::affine(&x, &l, &u, bits).unwrap();
            let fake: Vec<f32> = affine_fake_quant(&x, &l, &u, bits).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let back: Vec<f32> = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(fake, back, "{bits} bits per channel");
        }
    }

    #[test]
    fn a_grid_with_both_ends_on_ties_does_not_fit_its_bits() {
        // 3 bits on [-1, 1]: s = 3.5, s l = -3.5 and s u = 3.5 both round outwards: 9 levels.
        let x = data(16);
        let (l, u) = (Tensor::new(-1f32, &Device::Cpu).unwrap(), Tensor::new(1f32, &Device::Cpu).unwrap());
        let mut v: Vec<f32> = affine_fake_quant(&x, &l, &u, 3).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        v.sort_by(f32::total_cmp);
        v.dedup();
        assert_eq!((v[0], v[v.len() - 1]), (-4.0 / 3.5, 4.0 / 3.5));
        assert!(matches!(QuantizedTensor::affine(&x, &l, &u, 3), Err(QuantError::Malformed(_))));
    }

    #[test]
    fn malformed_exports_are_errors() {
        let x = data(16);
        let (l, u) = (Tensor::new(-1f32, &Device::Cpu).unwrap(), Tensor::new(1.3f32, &Device::Cpu).unwrap());
        let good = QuantizedTensor::affine(&x, &l, &u, 3).unwrap();
        let mut bad = good.clone();
        bad.codes.pop();
        assert!(bad.dequantize(&Device::Cpu).is_err());
        let mut bad = good.clone();
        bad.codes[0] = 8;
        assert!(bad.validate().is_err());
        let mut bad = good.clone();
        bad.scale[0] = 0.0;
        assert!(bad.validate().is_err());
        let mut bad = good.clone();
        bad.zero_point.push(0);
        assert!(bad.validate().is_err());
        // A shape whose product wraps to a small number, with no codes.
        let mut bad = good.clone();
        bad.shape = vec![1 << 32, 1 << 32];
        bad.codes.clear();
        assert!(bad.validate().is_err(), "a wrapping shape product validated");
        // i32::MIN would wrap in `code - zero_point`.
        let mut bad = good.clone();
        bad.zero_point[0] = i32::MIN;
        assert!(bad.validate().is_err() && bad.dequantize(&Device::Cpu).is_err());
        // Zero points up to 2^24 in magnitude are exact in f32 and pass; one more does not.
        let mut edge = good.clone();
        edge.zero_point[0] = -(MAX_ZERO_POINT as i32);
        edge.validate().unwrap();
        edge.zero_point[0] -= 1;
        assert!(edge.validate().is_err());
        // Per-channel scales must match axis 0 (4 rows here), with a zero point each.
        let mut bad = good.clone();
        bad.scale = vec![1.0; 3];
        bad.zero_point = vec![0; 3];
        assert!(matches!(bad.validate(), Err(QuantError::Malformed(_))));
        let mut four = good.clone();
        four.scale = vec![1.0; 4];
        four.zero_point = vec![0; 4];
        four.validate().unwrap();
    }

    #[test]
    fn a_zero_point_of_two_to_the_24_is_exported() {
        // 8 bits over [-2^24, -2^24 + 255]: s = 1, zero point 2^24, the largest allowed.
        let l = -(MAX_ZERO_POINT as f32);
        let x = Tensor::new(&[l, l + 100.0, l + 255.0], &Device::Cpu).unwrap();
        let (lo, hi) = (Tensor::new(l, &Device::Cpu).unwrap(), Tensor::new(l + 255.0, &Device::Cpu).unwrap());
        let q = QuantizedTensor::asym(&x, &lo, &hi, 8).unwrap();
        assert_eq!((q.scale[0], q.zero_point[0]), (1.0, MAX_ZERO_POINT as i32));
        assert_eq!(q.dequantize(&Device::Cpu).unwrap().to_vec1::<f32>().unwrap(), vec![l, l + 100.0, l + 255.0]);
    }

    #[test]
    fn a_field_of_the_wrong_type_or_rank_is_refused() {
        let x = data(16);
        let (l, u) = (Tensor::new(-1f32, &Device::Cpu).unwrap(), Tensor::new(1.3f32, &Device::Cpu).unwrap());
        let good = QuantizedTensor::affine(&x, &l, &u, 3).unwrap();
        let bytes = good.to_bytes().unwrap();
        assert_eq!(QuantizedTensor::from_bytes(&bytes).unwrap(), good);
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        // Rewrite one field with another type (same bytes) or as a matrix.
        let with = |field: &str, dtype: Option<safetensors::Dtype>, matrix: bool| {
            let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
                .tensors()
                .into_iter()
                .map(|(name, t)| {
                    let (dt, mut shape) = (t.dtype(), t.shape().to_vec());
                    if name == field {
                        if matrix {
                            shape.insert(0, 1);
                        }
                        let dt = dtype.unwrap_or(dt);
                        return (name, safetensors::tensor::TensorView::new(dt, shape, t.data()).unwrap());
                    }
                    (name, safetensors::tensor::TensorView::new(dt, shape, t.data()).unwrap())
                })
                .collect();
            safetensors::serialize(views, None).unwrap()
        };
        assert_eq!(QuantizedTensor::from_bytes(&with("scale", None, false)).unwrap(), good);
        assert!(matches!(
            QuantizedTensor::from_bytes(&with("scale", Some(safetensors::Dtype::I32), false)),
            Err(QuantError::Malformed(_))
        ));
        assert!(matches!(QuantizedTensor::from_bytes(&with("codes", None, true)), Err(QuantError::Malformed(_))));
    }

    #[test]
    fn bytes_round_trip_and_truncations_are_errors() {
        let x = data(40);
        let (l, u) = (Tensor::new(-1f32, &Device::Cpu).unwrap(), Tensor::new(1.3f32, &Device::Cpu).unwrap());
        let q = QuantizedTensor::affine(&x, &l, &u, 3).unwrap();
        let bytes = q.to_bytes().unwrap();
        assert_eq!(QuantizedTensor::from_bytes(&bytes).unwrap(), q);
        for cut in [0, 8, bytes.len() / 2, bytes.len() - 1] {
            assert!(QuantizedTensor::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = QuantizedTensor::from_bytes(&bytes);
        }

        #[test]
        fn arbitrary_fields_never_panic(
            shape in proptest::collection::vec(proptest::prelude::any::<usize>(), 0..4),
            bits in 0u32..10,
            codes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            zp in proptest::collection::vec(proptest::prelude::any::<i32>(), 0..3),
        ) {
            let scale = vec![1.5f32; zp.len()];
            let q = QuantizedTensor { shape, bits, codes, scale, zero_point: zp };
            if q.validate().is_ok() {
                proptest::prop_assert!(q.dequantize(&Device::Cpu).is_ok());
            }
        }
    }
}
