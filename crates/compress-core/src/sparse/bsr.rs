//! `Bsr1xN`: block-sparse rows with N x 1 blocks (spec section 2, "Packed format"). Output
//! channels form `G = C_out / N` groups; a kept block is one input channel `j` of one group,
//! stored as `K_h K_w` taps of N contiguous output values:
//! - `indptr[G + 1]`: group `g`'s blocks are `indptr[g]..indptr[g + 1]`;
//! - `indices[nnzb]`: the input channel of each block, strictly increasing within a group;
//! - `data[nnzb][K_h K_w][N]`: `data[e][t][i] = W[g N + i, indices[e], t]`.

use super::{Result, SparseError, dims};
use candle_core::{DType, Device, Tensor};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::path::Path;

/// The most dense values per stored value (data, pointers and indices) a valid weight may
/// declare: a fully pruned 2048 x 2048 layer at N = 4 stores 513 pointers for 4 M values (8 K
/// per stored value); a crafted file declaring terabytes is refused.
pub const MAX_EXPANSION: usize = 1 << 16;

/// A weight packed in the 1xN block format.
#[derive(Debug, Clone, PartialEq)]
pub struct Bsr1xN {
    /// Block height N (outputs per block).
    pub n: usize,
    /// Output channels.
    pub c_out: usize,
    /// Input channels.
    pub c_in: usize,
    /// Kernel height and width (1 x 1 for a linear layer or pointwise conv).
    pub kernel: (usize, usize),
    /// Group pointers, `C_out / N + 1` entries.
    pub indptr: Vec<u32>,
    /// Input channel of each kept block.
    pub indices: Vec<u32>,
    /// `nnzb x K_h K_w x N` values.
    pub data: Vec<f32>,
}

impl Bsr1xN {
    /// Packs a dense (masked) weight `[C_out, C_in, K_h, K_w]` or `[C_out, C_in]`: a block is
    /// kept when any of its values is non-zero.
    pub fn from_dense(w: &Tensor, n: usize) -> Result<Self> {
        let (c_out, c_in, kk) = dims(w)?;
        if n == 0 || c_out % n != 0 {
            return Err(SparseError::BlockSize { n, c_out });
        }
        let kernel = match w.dims() {
            [_, _, kh, kw] => (*kh, *kw),
            _ => (1, 1),
        };
        let v: Vec<f32> = w.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let at = |o: usize, j: usize, t: usize| v[(o * c_in + j) * kk + t];
        let mut indptr = vec![0u32];
        let (mut indices, mut data) = (Vec::new(), Vec::new());
        for g in 0..c_out / n {
            for j in 0..c_in {
                let any = (g * n..(g + 1) * n).any(|o| (0..kk).any(|t| at(o, j, t) != 0.0));
                if any {
                    indices.push(j as u32);
                    for t in 0..kk {
                        data.extend((g * n..(g + 1) * n).map(|o| at(o, j, t)));
                    }
                }
            }
            indptr.push(indices.len() as u32);
        }
        Ok(Self { n, c_out, c_in, kernel, indptr, indices, data })
    }

    /// Taps per block.
    pub fn kk(&self) -> usize {
        self.kernel.0 * self.kernel.1
    }

    /// The same weight as a 1x1 kernel over `C_in K_h K_w` virtual input channels, the rows of
    /// an im2col matrix (`j K_h K_w + t` for tap `t` of input `j`): a kept `K x K` block becomes
    /// `K_h K_w` consecutive 1x1 blocks, so the 1x1 kernel runs a `K x K` convolution on im2col.
    pub fn taps_as_channels(&self) -> Self {
        let kk = self.kk();
        let indices = self.indices.iter().flat_map(|&j| (0..kk as u32).map(move |t| j * kk as u32 + t)).collect();
        let indptr = self.indptr.iter().map(|&p| p * kk as u32).collect();
        Self { c_in: self.c_in * kk, kernel: (1, 1), indptr, indices, data: self.data.clone(), ..*self }
    }

    /// Kept blocks.
    pub fn nnzb(&self) -> usize {
        self.indices.len()
    }

    /// Checks every size and index (data read from a file must pass before any kernel runs).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(SparseError::Malformed(m));
        if self.n == 0 || !self.c_out.is_multiple_of(self.n) {
            return Err(SparseError::BlockSize { n: self.n, c_out: self.c_out });
        }
        let groups = self.c_out / self.n;
        if self.indptr.len() != groups + 1 || self.indptr.first() != Some(&0) {
            return bad(format!(
                "indptr has {} entries for {groups} groups, or does not start at 0",
                self.indptr.len()
            ));
        }
        if self.indptr.windows(2).any(|w| w[0] > w[1]) {
            return bad("indptr decreases".into());
        }
        if self.indptr[groups] as usize != self.indices.len() {
            return bad(format!("indptr ends at {}, there are {} blocks", self.indptr[groups], self.indices.len()));
        }
        for g in 0..groups {
            let idx = &self.indices[self.indptr[g] as usize..self.indptr[g + 1] as usize];
            if idx.iter().any(|&j| j as usize >= self.c_in) {
                return bad(format!("group {g} names an input channel >= {}", self.c_in));
            }
            if idx.windows(2).any(|w| w[0] >= w[1]) {
                return bad(format!("group {g}: indices not strictly increasing"));
            }
        }
        let values = self.nnzb().checked_mul(self.kk()).and_then(|v| v.checked_mul(self.n));
        if values != Some(self.data.len()) {
            return bad(format!("{} values for {} blocks of {} x {}", self.data.len(), self.nnzb(), self.kk(), self.n));
        }
        // The dense weight this stands for may be far larger than what is stored (that is the
        // point of sparsity), but not beyond any plausible sparsity: a few declared dimensions
        // must not make `to_dense` or a packed layer allocate terabytes.
        let stored = self.data.len() + self.indptr.len() + self.indices.len();
        let dense = self.c_out.checked_mul(self.c_in).and_then(|v| v.checked_mul(self.kk()));
        match dense {
            Some(d) if d <= stored.saturating_mul(MAX_EXPANSION) => Ok(()),
            _ => bad(format!(
                "declared shape {} x {} x {} x {} is over {MAX_EXPANSION} times the {stored} stored values",
                self.c_out, self.c_in, self.kernel.0, self.kernel.1
            )),
        }
    }

    /// The dense weight `[C_out, C_in, K_h, K_w]` (`[C_out, C_in]` for a 1 x 1 kernel packed from a
    /// 2-D weight is returned as `[C_out, C_in, 1, 1]`).
    pub fn to_dense(&self, device: &Device) -> Result<Tensor> {
        self.validate()?;
        let kk = self.kk();
        let mut w = vec![0f32; self.c_out * self.c_in * kk];
        for g in 0..self.c_out / self.n {
            for e in self.indptr[g] as usize..self.indptr[g + 1] as usize {
                let j = self.indices[e] as usize;
                for t in 0..kk {
                    for i in 0..self.n {
                        w[((g * self.n + i) * self.c_in + j) * kk + t] = self.data[(e * kk + t) * self.n + i];
                    }
                }
            }
        }
        Ok(Tensor::from_vec(w, (self.c_out, self.c_in, self.kernel.0, self.kernel.1), device)?)
    }

    /// Writes `indptr`, `indices`, `data` and `shape` (`[N, C_out, C_in, K_h, K_w]`) to a
    /// safetensors file, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.validate()?;
        let u32s = |v: &[u32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let shape: Vec<u32> =
            [self.n, self.c_out, self.c_in, self.kernel.0, self.kernel.1].iter().map(|&x| x as u32).collect();
        let (a, b, c, d) = (
            u32s(&self.indptr),
            u32s(&self.indices),
            self.data.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
            u32s(&shape),
        );
        let err = |e: safetensors::SafeTensorError| SparseError::File { path: path.to_path_buf(), source: e.into() };
        let views = vec![
            ("indptr", TensorView::new(Dtype::U32, vec![self.indptr.len()], &a).map_err(err)?),
            ("indices", TensorView::new(Dtype::U32, vec![self.indices.len()], &b).map_err(err)?),
            ("data", TensorView::new(Dtype::F32, vec![self.data.len()], &c).map_err(err)?),
            ("shape", TensorView::new(Dtype::U32, vec![5], &d).map_err(err)?),
        ];
        let bytes = safetensors::serialize(views, None).map_err(err)?;
        crate::atomic::write(path, &bytes).map_err(|e| SparseError::File { path: path.to_path_buf(), source: e.into() })
    }

    /// Reads a file written by [`Bsr1xN::save`]; anything malformed is an error, never a panic.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).map_err(|e| SparseError::File { path: path.to_path_buf(), source: e.into() })?;
        Self::from_bytes(&bytes).map_err(|e| match e {
            SparseError::Malformed(m) => SparseError::Malformed(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// Parses the bytes of a file written by [`Bsr1xN::save`] and validates the result.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| SparseError::Malformed(e.to_string()))?;
        let get = |name: &str, dt: Dtype| -> Result<Vec<[u8; 4]>> {
            let t = st.tensor(name).map_err(|e| SparseError::Malformed(format!("{name}: {e}")))?;
            if t.dtype() != dt || t.shape().len() != 1 {
                return Err(SparseError::Malformed(format!("{name} must be a 1-D {dt:?} tensor")));
            }
            Ok(t.data().chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect())
        };
        let u32s = |name: &str| -> Result<Vec<u32>> {
            Ok(get(name, Dtype::U32)?.into_iter().map(u32::from_le_bytes).collect())
        };
        let shape = u32s("shape")?;
        let [n, c_out, c_in, kh, kw] = shape.as_slice() else {
            return Err(SparseError::Malformed(format!("shape has {} entries, not 5", shape.len())));
        };
        let b = Self {
            n: *n as usize,
            c_out: *c_out as usize,
            c_in: *c_in as usize,
            kernel: (*kh as usize, *kw as usize),
            indptr: u32s("indptr")?,
            indices: u32s("indices")?,
            data: get("data", Dtype::F32)?.into_iter().map(f32::from_le_bytes).collect(),
        };
        b.validate()?;
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparse::{BlockOrder, block_mask};

    /// One block in one group of `n` outputs and one input; the given declared sizes.
    fn crafted(n: usize, c_out: usize, c_in: usize, kernel: (usize, usize), data: usize) -> Bsr1xN {
        let groups = c_out / n;
        let mut indptr = vec![0u32; groups + 1];
        indptr[groups] = 1;
        Bsr1xN { n, c_out, c_in, kernel, indptr, indices: vec![0], data: vec![0.5; data] }
    }

    #[test]
    fn crafted_sizes_are_refused_before_any_allocation() {
        // nnzb * kk * n = 1 * 4 * 2^62 wraps to 0, matching an empty data array.
        let wraps = crafted(1 << 62, 1 << 62, 1, (2, 2), 0);
        assert!(matches!(wraps.validate(), Err(SparseError::Malformed(_))), "a wrapping product validated");
        assert!(wraps.to_dense(&Device::Cpu).is_err());
        // 2^20 x 2^20 x 1 x 1 declared around one stored block: a terabyte-sized dense weight.
        let huge = crafted(1 << 20, 1 << 20, 1 << 20, (1, 1), 1 << 20);
        let e = huge.validate().expect_err("huge");
        assert!(e.to_string().contains("times the"), "{e}");
        assert!(crate::sparse::PackedLinear::new(huge, None).is_err());
        // A legitimately sparse weight passes: one block kept of 64 x 64 x 3 x 3.
        crafted(4, 64, 64, (3, 3), 36).validate().expect("one kept block of a sparse weight");
        // The limit itself: one 1 x 1 block stores 1 value, 2 pointers and 1 index, so up to
        // 4 x 2^16 input channels pass and one more does not.
        let at = 4 * MAX_EXPANSION;
        crafted(1, 1, at, (1, 1), 1).validate().expect("exactly at the limit");
        assert!(crafted(1, 1, at + 1, (1, 1), 1).validate().is_err(), "one past the limit");
    }

    #[test]
    fn block_heights_that_do_not_divide_the_outputs_are_refused() {
        let w = Tensor::ones((4, 2), DType::F32, &Device::Cpu).unwrap();
        for n in [0usize, 3, 8] {
            assert!(matches!(Bsr1xN::from_dense(&w, n), Err(SparseError::BlockSize { .. })), "n = {n}");
            let mut b = Bsr1xN::from_dense(&w, 2).unwrap();
            b.n = n;
            assert!(matches!(b.validate(), Err(SparseError::BlockSize { .. })), "n = {n}");
        }
    }

    #[test]
    fn a_field_of_the_wrong_type_or_rank_is_refused() {
        let w = Tensor::new(&[[1f32, 0.], [0., 2.], [3., 0.], [0., 0.]], &Device::Cpu).unwrap();
        let good = Bsr1xN::from_dense(&w, 2).unwrap();
        let u32s = |v: &[u32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (indptr, indices, shape) = (u32s(&good.indptr), u32s(&good.indices), u32s(&[2, 4, 2, 1, 1]));
        let data: Vec<u8> = good.data.iter().flat_map(|x| x.to_le_bytes()).collect();
        let file = |indptr_type: Dtype, shape_dims: Vec<usize>| {
            let views = vec![
                ("indptr", TensorView::new(indptr_type, vec![good.indptr.len()], &indptr).unwrap()),
                ("indices", TensorView::new(Dtype::U32, vec![good.indices.len()], &indices).unwrap()),
                ("data", TensorView::new(Dtype::F32, vec![good.data.len()], &data).unwrap()),
                ("shape", TensorView::new(Dtype::U32, shape_dims, &shape).unwrap()),
            ];
            safetensors::serialize(views, None).unwrap()
        };
        assert_eq!(Bsr1xN::from_bytes(&file(Dtype::U32, vec![5])).unwrap(), good);
        // The same bytes declared as i32 pointers, or the shape as a 1 x 5 matrix.
        assert!(matches!(Bsr1xN::from_bytes(&file(Dtype::I32, vec![5])), Err(SparseError::Malformed(_))));
        assert!(matches!(Bsr1xN::from_bytes(&file(Dtype::U32, vec![1, 5])), Err(SparseError::Malformed(_))));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            if let Ok(b) = Bsr1xN::from_bytes(&bytes) {
                proptest::prop_assert!(b.to_dense(&Device::Cpu).is_ok());
            }
        }

        #[test]
        fn a_valid_file_with_any_byte_changed_never_panics(at in 0usize..10_000, to in proptest::prelude::any::<u8>()) {
            let w = Tensor::from_vec((0..8 * 3 * 4).map(|i| (i % 5) as f32).collect::<Vec<f32>>(), (8, 3, 2, 2), &Device::Cpu)
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let b = Bsr1xN::from_dense(&w, 4).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let dir = tempfile::tempdir().map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let p = dir.path().join("w.safetensors");
            b.save(&p).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let mut bytes = std::fs::read(&p).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let i = at % bytes.len();
            bytes[i] = to;
            if let Ok(b) = Bsr1xN::from_bytes(&bytes) {
                proptest::prop_assert!(b.to_dense(&Device::Cpu).is_ok());
                // Building a layer may refuse the weight (a non-square kernel), never panic.
                let _ = crate::sparse::PackedConv2d::new(b, None, 1, 1);
            }
        }
    }

    #[test]
    fn spec_packed_example() {
        // The rearranged weight of section 8 (rows 7, 3, 2, 6, 0, 1, 4, 5), masked at p = 0.5.
        let rows: [[f32; 3]; 8] = [
            [-7., 9., -7.],
            [4., -8., 8.],
            [-9., -8., -1.],
            [5., 4., 6.],
            [1., 4., -9.],
            [4., -1., 8.],
            [4., 0., -8.],
            [-3., 3., 2.],
        ];
        let w = Tensor::new(&rows, &Device::Cpu).unwrap();
        let m = block_mask(&w, 4, 0.5, BlockOrder::Strict).unwrap();
        let b = Bsr1xN::from_dense(&(&w * &m).unwrap(), 4).unwrap();
        assert_eq!(b.indptr, vec![0, 2, 3]);
        assert_eq!(b.indices, vec![0, 1, 2]);
        assert_eq!(b.data, vec![-7., 4., -9., 5., 9., -8., -8., 4., -9., 8., -8., 2.]);
    }

    #[test]
    fn round_trips_exactly_and_through_a_file() {
        let v: Vec<f32> = (0..16 * 5 * 9).map(|i| ((i * 7919 % 613) as f32 - 300.0) / 100.0).collect();
        let w = Tensor::from_vec(v, (16, 5, 3, 3), &Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for n in [1usize, 2, 4, 8, 16] {
            for rate in [0.0, 0.5, 0.75, 0.95] {
                let wm = (&w * block_mask(&w, n, rate, BlockOrder::Strict).unwrap()).unwrap();
                let b = Bsr1xN::from_dense(&wm, n).unwrap();
                assert_eq!(b.nnzb(), 16 / n * 5 - (rate * (16 / n * 5) as f64).floor() as usize);
                let back = b.to_dense(&Device::Cpu).unwrap();
                let d = (back - &wm).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert_eq!(d, 0.0);
                let p = dir.path().join(format!("w{n}-{rate}.safetensors"));
                b.save(&p).unwrap();
                assert_eq!(Bsr1xN::load(&p).unwrap(), b);
            }
        }
    }

    #[test]
    fn malformed_data_is_an_error_not_a_panic() {
        let w = Tensor::new(&[[1f32, 0.], [0., 2.], [3., 0.], [0., 0.]], &Device::Cpu).unwrap();
        let good = Bsr1xN::from_dense(&w, 2).unwrap();
        let mut cases = Vec::new();
        let mut b = good.clone();
        b.indptr[1] = 9;
        cases.push(b);
        let mut b = good.clone();
        b.indices[0] = 7;
        cases.push(b);
        let mut b = good.clone();
        b.data.pop();
        cases.push(b);
        let mut b = good.clone();
        b.indptr.pop();
        cases.push(b);
        let mut b = good.clone();
        b.n = 3;
        cases.push(b);
        for b in cases {
            assert!(b.validate().is_err() && b.to_dense(&Device::Cpu).is_err(), "{b:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.safetensors");
        std::fs::write(&p, b"not a safetensors file").unwrap();
        assert!(Bsr1xN::load(&p).is_err());
        good.save(&p).unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&p, bytes).unwrap();
        assert!(Bsr1xN::load(&p).is_err());
    }
}
