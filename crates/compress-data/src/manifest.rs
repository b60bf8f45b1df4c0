//! `datasets/manifest.toml`: every dataset the papers use, where it comes from and how to check it.

use crate::error::{DataError, Result};
use serde::Deserialize;
use std::path::Path;

/// The whole manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// One entry per dataset.
    #[serde(rename = "dataset")]
    pub datasets: Vec<DatasetEntry>,
}

/// One dataset: its files and how to obtain them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetEntry {
    /// Short name used on the command line (`cargo xtask fetch <name>`).
    pub name: String,
    /// What it is.
    pub description: String,
    /// Licence or terms of use.
    pub license: String,
    /// Which of the toolkit's methods use it.
    #[serde(default)]
    pub used_by: Vec<String>,
    /// Approximate total download size in bytes, where known.
    pub size_bytes: Option<u64>,
    /// True when the files cannot be downloaded automatically (licence terms).
    #[serde(default)]
    pub manual: bool,
    /// How to obtain and place the files by hand.
    pub instructions: String,
    /// The files to fetch.
    #[serde(default, rename = "file")]
    pub files: Vec<FileEntry>,
}

/// One file of a dataset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// File name in the dataset's cache directory.
    pub name: String,
    /// Expected SHA-256 (hex), where published or recorded.
    pub sha256: Option<String>,
    /// Expected size in bytes, where known.
    pub size: Option<u64>,
    /// HTTPS locations, tried in order.
    #[serde(default)]
    pub urls: Vec<String>,
    /// A Hugging Face Hub location, tried after the URLs.
    pub hf: Option<HfLocation>,
    /// Archive format to unpack after download (`tar.gz` or `zip`).
    pub extract: Option<String>,
}

/// A file in a Hugging Face Hub repository.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HfLocation {
    /// Repository id, `owner/name`.
    pub repo: String,
    /// `dataset` or `model`.
    #[serde(default = "default_repo_type")]
    pub repo_type: String,
    /// Branch, tag or commit.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// Path of the file inside the repository.
    pub path: String,
}

fn default_repo_type() -> String {
    "dataset".into()
}

fn default_revision() -> String {
    "main".into()
}

impl Manifest {
    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses manifest text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let m: Manifest = toml::from_str(text).map_err(|e| DataError::format(path, e.to_string()))?;
        for d in &m.datasets {
            if !d.manual && d.files.is_empty() {
                return Err(DataError::format(path, format!("dataset {} lists no files and is not manual", d.name)));
            }
            for f in &d.files {
                if f.name.contains("..") || f.name.starts_with('/') {
                    return Err(DataError::format(
                        path,
                        format!("{}: file name {:?} escapes the cache", d.name, f.name),
                    ));
                }
                if let Some(s) = &f.sha256
                    && (s.len() != 64 || !s.chars().all(|c| c.is_ascii_hexdigit()))
                {
                    return Err(DataError::format(path, format!("{}/{}: malformed sha256", d.name, f.name)));
                }
                if let Some(x) = &f.extract
                    && x != "tar.gz"
                    && x != "zip"
                {
                    return Err(DataError::format(
                        path,
                        format!("{}/{}: unknown archive format {x:?}", d.name, f.name),
                    ));
                }
                if f.urls.is_empty() && f.hf.is_none() && !d.manual {
                    return Err(DataError::format(path, format!("{}/{}: no source", d.name, f.name)));
                }
            }
        }
        Ok(m)
    }

    /// The entry called `name`, or an error listing the known names.
    pub fn get(&self, name: &str) -> Result<&DatasetEntry> {
        self.datasets.iter().find(|d| d.name == name).ok_or_else(|| {
            DataError::Config(format!("unknown dataset {name:?}; known datasets: {}", self.names().join(", ")))
        })
    }

    /// All dataset names, in manifest order.
    pub fn names(&self) -> Vec<&str> {
        self.datasets.iter().map(|d| d.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_manifest_parses_and_lists_the_papers_datasets() {
        let path = crate::embedded::datasets_dir().expect("datasets dir").join("manifest.toml");
        let m = Manifest::load(&path).expect("manifest");
        for name in ["mnist", "cifar10", "cifar100", "imagenet", "div2k", "set5", "set14", "b100", "urban100"] {
            m.get(name).unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(m.get("imagenet").expect("entry").manual);
        let e = m.get("nope").expect_err("unknown");
        assert!(e.to_string().contains("known datasets: mnist"), "{e}");
    }

    #[test]
    fn rejects_bad_entries() {
        let p = Path::new("m.toml");
        let bad = r#"[[dataset]]
name = "x"
description = "d"
license = "l"
instructions = "i"
[[dataset.file]]
name = "../evil"
urls = ["http://127.0.0.1/x"]
"#;
        assert!(Manifest::parse(bad, p).expect_err("escape").to_string().contains("escapes"));
        let bad = bad.replace("../evil", "ok").replace("urls", "sha256 = \"zz\"\nurls");
        assert!(Manifest::parse(&bad, p).expect_err("sha").to_string().contains("malformed sha256"));
        assert!(Manifest::parse("[[dataset]]\nname=1", p).is_err());
    }
}
