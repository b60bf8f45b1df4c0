//! Layers of the zoo: thin candle layers that report their cost to [`crate::count`] and whose
//! backward passes are correct where candle's are not (max pooling, layer norm).

mod conv;
mod linear;
mod norm;
mod pool;
pub mod replace;
pub mod resize;
mod shuffle;

pub use conv::{Activation, Conv2d, ConvBn, ConvSpec, WeightInit};
pub use linear::Linear;
pub use norm::{BatchNorm2d, LayerNorm};
pub use pool::{global_avg_pool, max_pool2d};
pub use replace::{Replacement, Replacements, build_with};
pub use resize::bilinear_align_corners;
pub use shuffle::{PRelu, pixel_shuffle};
