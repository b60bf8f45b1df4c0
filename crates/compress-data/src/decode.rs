//! Decoding image files (PNG, JPEG) into `u8` CHW buffers, with errors that name the file.

use crate::error::{DataError, Result};
use image::DynamicImage;
use std::path::Path;

/// File extensions the image loaders accept (lower case).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Whether `path` has an accepted image extension.
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Opens and fully decodes an image; a truncated or corrupt file is a [`DataError::Format`].
pub fn open(path: &Path) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let format = image::guess_format(&bytes).map_err(|e| DataError::format(path, format!("not an image: {e}")))?;
    if format == image::ImageFormat::Jpeg && !jpeg_is_complete(&bytes) {
        return Err(DataError::format(path, "truncated JPEG: no end-of-image marker after the last scan"));
    }
    image::load_from_memory_with_format(&bytes, format)
        .map_err(|e| DataError::format(path, format!("cannot decode image: {e}")))
}

/// Whether a JPEG stream has its end-of-image marker (`FF D9`) after its last start-of-scan
/// (`FF DA`). The JPEG decoder fills a truncated scan with grey silently, so this is checked
/// first. Inside entropy-coded data `FF` is always followed by `00` or a restart marker, so the
/// last `FF DA` is the last scan (an EXIF thumbnail's markers come before it).
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |m: u8| bytes.windows(2).rposition(|w| w[0] == 0xFF && w[1] == m);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

/// An RGB image as planar `u8` CHW `(pixels, height, width)`; grayscale is replicated.
pub fn to_chw_rgb(img: &DynamicImage) -> (Vec<u8>, usize, usize) {
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let mut out = vec![0u8; 3 * h * w];
    for (i, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            out[c * h * w + i] = px.0[c];
        }
    }
    (out, h, w)
}
