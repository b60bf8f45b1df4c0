//! Helpers shared by this crate's integration tests.

use compress_data::batch::{Augment, ImageDataset, PixelTransform};
use compress_data::{embedded, mnist};

/// The first `n` mnist-5k digits of a split, normalised; training digits pad-and-crop augmented.
pub fn data(n: usize, train: bool) -> ImageDataset {
    let split = if train { mnist::Split::Train } else { mnist::Split::Test };
    let d = embedded::mnist_5k(split).expect("mnist").subset(&(0..n).collect::<Vec<_>>()).expect("subset");
    let augment = if train { Augment::PadCrop { pad: 2 } } else { Augment::None };
    d.with_transform(PixelTransform { augment, mean: vec![0.13], std: vec![0.31] }).expect("transform")
}
