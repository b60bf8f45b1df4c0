//! An embedded dataset's folder must be exactly what its `SHA256SUMS` lists.

use std::path::Path;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("ls") {
        let p = e.expect("entry").path();
        let dest = to.join(p.file_name().expect("name"));
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).expect("copy");
        }
    }
}

#[test]
fn an_unlisted_image_in_a_split_is_refused_not_loaded() {
    let copy = tempfile::tempdir().expect("tempdir");
    copy_dir(&compress_data::embedded::datasets_dir().expect("datasets"), copy.path());
    // SAFETY: the only test of this binary; nothing else reads the environment concurrently.
    unsafe { std::env::set_var(compress_data::embedded::DATASETS_ENV, copy.path()) };
    assert_eq!(compress_data::embedded::photos_12("test", 2).expect("intact copy").pairs.len(), 5);
    let extra = copy.path().join("photos-12/test/extra.png");
    std::fs::copy(copy.path().join("photos-12/test/camera.png"), &extra).expect("extra image");
    let e = compress_data::embedded::photos_12("test", 2).expect_err("unlisted file");
    assert!(e.to_string().contains("test/extra.png is not listed"), "{e}");
    std::fs::remove_file(&extra).expect("rm");
    std::fs::remove_file(copy.path().join("mnist-5k/SHA256SUMS")).expect("rm");
    let e = compress_data::embedded::mnist_5k(compress_data::mnist::Split::Test).expect_err("no list");
    assert!(e.to_string().contains("cannot be verified"), "{e}");
}
