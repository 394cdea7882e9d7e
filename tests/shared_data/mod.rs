//! Where the real data slices are: `$FRACTALNET_SHARED/data`, else `shared/data` inside or
//! beside the repository (or the workplace's /work/shared), else the copies committed under
//! `tests/data`, so that the suite runs on any fresh clone.

use std::path::PathBuf;

/// The folder holding `cifar10-sample/` and `fashion-mnist-sample/`.
pub fn shared_data() -> PathBuf {
    let has_slices =
        |d: &PathBuf| d.join("fashion-mnist-sample").is_dir() && d.join("cifar10-sample").is_dir();
    if let Ok(e) = std::env::var("FRACTALNET_SHARED") {
        let d = PathBuf::from(&e).join("data");
        assert!(
            has_slices(&d),
            "FRACTALNET_SHARED={e}: no data slices in {}",
            d.display()
        );
        return d;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [
        root.join("shared/data"),
        root.join("../shared/data"),
        PathBuf::from("/work/shared/data"),
        root.join("tests/data"),
    ]
    .into_iter()
    .find(has_slices)
    .expect("no data slices: tests/data is missing from this checkout")
}
