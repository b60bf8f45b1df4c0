//! Launch geometry of the CUDA kernels (`kernels/*.cu`), from shapes alone: grid and block sizes,
//! the entry point for a block height, the bound grouping of the fake quantizers. Sizes beyond a
//! kernel's 32-bit indices or CUDA's grid limits are errors here, before any launch.

use std::fmt;

/// Threads per block of every kernel (one warp multiple; pixels / elements along x).
pub const THREADS: u32 = 128;

/// CUDA's limit on a grid's y and z extents.
pub const MAX_GRID_YZ: usize = 65_535;

/// A launch: `grid` blocks of `block` threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// Blocks along x, y, z.
    pub grid: (u32, u32, u32),
    /// Threads per block along x, y, z.
    pub block: (u32, u32, u32),
}

/// A shape no kernel launch can cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchError(pub String);

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CUDA launch: {}", self.0)
    }
}

impl std::error::Error for LaunchError {}

fn u32_of(v: usize, what: &str) -> Result<u32, LaunchError> {
    u32::try_from(v).map_err(|_| LaunchError(format!("{what} = {v} exceeds the kernels' 32-bit indices")))
}

/// One thread per `x` (ceil-divided into blocks of [`THREADS`]), blocks along `y` and `z`.
fn grid3(x: usize, y: usize, z: usize, what: &str) -> Result<Launch, LaunchError> {
    if x == 0 || y == 0 || z == 0 {
        return Err(LaunchError(format!("{what}: an empty extent ({x} x {y} x {z})")));
    }
    if y > MAX_GRID_YZ || z > MAX_GRID_YZ {
        return Err(LaunchError(format!("{what}: grid {y} x {z} exceeds CUDA's {MAX_GRID_YZ} along y / z")));
    }
    let blocks = x.div_ceil(THREADS as usize);
    Ok(Launch { grid: (u32_of(blocks, what)?, y as u32, z as u32), block: (THREADS, 1, 1) })
}

/// The 1xN product `onexn_nchw_*`: one thread per (pixel, group, sample). Every product index
/// (`batch x C_in x pixels`, `batch x C_out x pixels`) must fit in 64 bits and each factor in 32.
pub fn onexn(batch: usize, c_in: usize, c_out: usize, n: usize, pixels: usize) -> Result<Launch, LaunchError> {
    if n == 0 || !c_out.is_multiple_of(n) {
        return Err(LaunchError(format!("block height {n} does not divide {c_out} outputs")));
    }
    for (v, what) in [(c_in, "C_in"), (c_out, "C_out"), (pixels, "pixels")] {
        u32_of(v, what)?;
    }
    grid3(pixels, c_out / n, batch, "1xN product")
}

/// The kernel entry for block height `n`: a specialised one (registers unrolled) for 1, 2, 4,
/// 8, 16 and 32, else `onexn_nchw_any` (which takes `n` as its last argument).
pub fn onexn_entry(n: usize) -> &'static str {
    match n {
        1 => "onexn_nchw_n1",
        2 => "onexn_nchw_n2",
        4 => "onexn_nchw_n4",
        8 => "onexn_nchw_n8",
        16 => "onexn_nchw_n16",
        32 => "onexn_nchw_n32",
        _ => "onexn_nchw_any",
    }
}

/// `im2col_nchw`: one thread per (output pixel, virtual channel `j K K + t`, sample).
pub fn im2col(batch: usize, c_in: usize, k: usize, out_pixels: usize) -> Result<Launch, LaunchError> {
    grid3(out_pixels, c_in * k * k, batch, "im2col")
}

/// An element-wise kernel over `len` values (the fake quantizers), on a 2^31-thread grid.
pub fn elementwise(len: usize) -> Result<Launch, LaunchError> {
    u32_of(len, "elements")?;
    grid3(len, 1, 1, "element-wise")
}

/// `(groups, inner)` of bounds varying along `axis` of a tensor of `dims` (`None`: one bound):
/// element `i` uses bound `(i / inner) % groups`, as the CPU ops index them.
pub fn bound_grouping(dims: &[usize], axis: Option<usize>) -> (usize, usize) {
    match axis {
        None => (1, 1),
        Some(a) => (dims[a], dims[a + 1..].iter().product::<usize>().max(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onexn_grids_cover_every_output_once() {
        // ResNet-50's 1x1 conv 512 -> 2048 at 7 x 7, batch 64, N = 4.
        let l = onexn(64, 512, 2048, 4, 49).unwrap();
        assert_eq!(l, Launch { grid: (1, 512, 64), block: (128, 1, 1) });
        // A ragged pixel count: the last block is partial, the kernel checks p < pixels.
        let l = onexn(1, 16, 32, 8, 129).unwrap();
        assert_eq!(l.grid, (2, 4, 1));
        let threads = l.grid.0 as usize * l.block.0 as usize;
        assert!(threads >= 129 && threads - 129 < THREADS as usize);
        assert!(onexn(1, 16, 30, 4, 10).is_err(), "N must divide C_out");
        assert!(onexn(1, 16, 32, 0, 10).is_err());
        assert!(onexn(0, 16, 32, 4, 10).is_err(), "an empty batch launches nothing");
        assert!(onexn(70_000, 16, 32, 4, 10).is_err(), "batch beyond the grid's z");
        assert!(onexn(1, 16, 32 * 70_000, 1, 10).is_err(), "groups beyond the grid's y");
        assert!(onexn(1, 16, 32, 4, 1 << 33).is_err(), "pixels beyond 32 bits");
    }

    #[test]
    fn entries_specialise_powers_of_two_to_32() {
        for (n, e) in [(1, "n1"), (2, "n2"), (4, "n4"), (8, "n8"), (16, "n16"), (32, "n32")] {
            assert_eq!(onexn_entry(n), format!("onexn_nchw_{e}"));
        }
        for n in [3, 5, 12, 64] {
            assert_eq!(onexn_entry(n), "onexn_nchw_any");
        }
    }

    #[test]
    fn im2col_and_elementwise_grids() {
        // A 3x3 conv of 64 channels on 56 x 56 outputs, batch 2: 576 virtual channels.
        assert_eq!(im2col(2, 64, 3, 56 * 56).unwrap().grid, (25, 576, 2));
        assert_eq!(elementwise(1000).unwrap().grid, (8, 1, 1));
        assert!(elementwise(0).is_err());
        assert!(elementwise(1 << 33).is_err());
    }

    #[test]
    fn bound_grouping_matches_the_cpu_indexing() {
        // Per-sample bounds of an [N, C, H, W] activation: element i uses bound i / (C H W).
        let dims = [2, 3, 4, 5];
        let (groups, inner) = bound_grouping(&dims, Some(0));
        assert_eq!((groups, inner), (2, 60));
        // Per-channel bounds of a [C_out, C_in, k, k] weight, and a bound per last-axis entry.
        assert_eq!(bound_grouping(&dims, Some(1)), (3, 20));
        assert_eq!(bound_grouping(&dims, Some(3)), (5, 1));
        assert_eq!(bound_grouping(&dims, None), (1, 1));
        // Every element's bound index equals its coordinate along the axis.
        let (g, inner) = bound_grouping(&dims, Some(2));
        for i in 0..120 {
            assert_eq!((i / inner) % g, (i / 5) % 4);
        }
    }
}
