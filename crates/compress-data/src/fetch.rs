//! Downloading the full datasets of `manifest.toml` into a local cache, checked and atomic.
//!
//! Each file goes to `<cache>/<dataset>/<name>`: HTTP(S) downloads stream into `<name>.part` and
//! resume it with a `Range` request after an interruption; Hugging Face Hub files go through
//! `hf-hub` (its own cache under `<cache>/hf`, which it fills atomically) and are then copied in.
//! A file is renamed to its final name only once complete and its SHA-256 matches; a mismatch
//! deletes the partial file. Archives unpack into a temporary folder that is renamed when done.
//! Files with no published checksum have theirs recorded in `<dataset>/SHA256SUMS` at first
//! download and verified on every later load (trust on first use; the report says which).

use crate::checksum::{sha256_file, verify_file};
use crate::error::{DataError, Result};
use crate::manifest::{DatasetEntry, FileEntry, HfLocation};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Environment variable naming the cache root of downloaded datasets.
pub const CACHE_ENV: &str = "COMPRESS_DATA";

/// Where `cargo xtask fetch <name>` puts dataset `name` under the default cache root.
pub fn default_dataset_dir(name: &str) -> PathBuf {
    Fetcher::new(default_cache_root()).dataset_dir(name)
}

/// The cache root: `$COMPRESS_DATA`, else `$XDG_CACHE_HOME/compress-rs`, else
/// `~/.cache/compress-rs`, else `./.data-cache`.
pub fn default_cache_root() -> PathBuf {
    // An empty variable counts as unset (not as the current directory).
    if let Some(p) = std::env::var_os(CACHE_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("compress-rs");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache").join("compress-rs"),
        None => PathBuf::from(".data-cache"),
    }
}

/// Reports download progress: `(file name, bytes so far, total if known)`.
pub type ProgressFn<'a> = dyn Fn(&str, u64, Option<u64>) + Sync + 'a;

/// Fetches datasets into a cache root.
#[derive(Debug, Clone)]
pub struct Fetcher {
    root: PathBuf,
    hf_endpoint: Option<String>,
    timeout: std::time::Duration,
}

/// What [`Fetcher::fetch`] did for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    /// Already present and valid.
    Cached,
    /// Downloaded from this source.
    Downloaded(String),
}

/// The result of fetching one dataset.
#[derive(Debug, Clone)]
pub struct FetchReport {
    /// The dataset's folder.
    pub dir: PathBuf,
    /// Per file: name, outcome, and whether its checksum was published (false: recorded now).
    pub files: Vec<(String, FileOutcome, bool)>,
}

impl Fetcher {
    /// A fetcher writing under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), hf_endpoint: None, timeout: std::time::Duration::from_secs(30) }
    }

    /// Uses another Hugging Face endpoint (a mirror) instead of the default.
    pub fn with_hf_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.hf_endpoint = Some(endpoint.into());
        self
    }

    /// Connection and read timeout of HTTP requests.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The folder that holds dataset `name`.
    pub fn dataset_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Fetches every file of `entry` (skipping valid ones), then unpacks archives.
    pub fn fetch(&self, entry: &DatasetEntry, progress: &ProgressFn<'_>) -> Result<FetchReport> {
        let dir = self.dataset_dir(&entry.name);
        if entry.manual {
            return Err(DataError::Fetch {
                dataset: entry.name.clone(),
                source_desc: "manual download".into(),
                msg: format!(
                    "this dataset cannot be downloaded automatically. {}\nPlace it under {}",
                    entry.instructions,
                    dir.display()
                ),
            });
        }
        let existed = dir.exists();
        std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
        let fetched = self.fetch_into(entry, &dir, progress);
        if fetched.is_err() && !existed {
            // A failed first fetch leaves no folder that looks like a dataset (`remove_dir`
            // only removes an empty one, so nothing fetched is lost).
            let _ = std::fs::remove_dir(&dir);
        }
        fetched
    }

    fn fetch_into(&self, entry: &DatasetEntry, dir: &Path, progress: &ProgressFn<'_>) -> Result<FetchReport> {
        let dir = dir.to_path_buf();
        let sums_path = dir.join("SHA256SUMS");
        let mut recorded =
            if sums_path.is_file() { crate::checksum::read_sums(&sums_path)? } else { Default::default() };
        let mut files = Vec::new();
        for f in &entry.files {
            let dest = dir.join(&f.name);
            let expected = f.sha256.clone().or_else(|| recorded.get(&f.name).cloned());
            let outcome = match (dest.is_file(), expected.as_deref()) {
                // Placed by hand with no digest to check against: accepted, its digest recorded.
                (true, None) => FileOutcome::Cached,
                (true, Some(e)) if verify_file(&dest, e).is_ok() => FileOutcome::Cached,
                (present, _) => {
                    if present {
                        // Present but wrong: fetch again rather than trust it.
                        std::fs::remove_file(&dest).map_err(|e| DataError::io(&dest, e))?;
                    }
                    FileOutcome::Downloaded(self.fetch_file(entry, f, &dest, expected.as_deref(), progress)?)
                }
            };
            if f.sha256.is_none() && !recorded.contains_key(&f.name) {
                recorded.insert(f.name.clone(), sha256_file(&dest)?);
            }
            if let Some(kind) = &f.extract {
                extract(&dest, kind, &dir)?;
            }
            files.push((f.name.clone(), outcome, f.sha256.is_some()));
        }
        let text: String = recorded.iter().map(|(n, d)| format!("{d}  {n}\n")).collect();
        write_atomic(&sums_path, text.as_bytes())?;
        Ok(FetchReport { dir, files })
    }

    fn fetch_file(
        &self,
        entry: &DatasetEntry,
        f: &FileEntry,
        dest: &Path,
        expected: Option<&str>,
        progress: &ProgressFn<'_>,
    ) -> Result<String> {
        let mut tried = Vec::new();
        for url in &f.urls {
            match self.download_http(url, dest, f.size, expected, &|n, t| progress(&f.name, n, t)) {
                Ok(()) => return Ok(url.clone()),
                Err(e @ DataError::Checksum { .. }) => return Err(e),
                Err(e) => tried.push(format!("  - {}", reason(&e))),
            }
        }
        if let Some(hf) = &f.hf {
            match self.download_hf(hf, dest, expected) {
                Ok(()) => return Ok(format!("hf://{}/{}", hf.repo, hf.path)),
                Err(e @ DataError::Checksum { .. }) => return Err(e),
                Err(e) => tried.push(format!("  - hf://{}@{}/{}: {}", hf.repo, hf.revision, hf.path, reason(&e))),
            }
        }
        Err(DataError::Fetch {
            dataset: entry.name.clone(),
            source_desc: f
                .urls
                .first()
                .cloned()
                .or_else(|| f.hf.as_ref().map(|h| format!("hf://{}", h.repo)))
                .unwrap_or_default(),
            msg: format!(
                "no source could deliver {}:\n{}\nTo place it by hand: {}\nPut the file at {}{}, then run the command again.",
                f.name,
                tried.join("\n"),
                entry.instructions,
                dest.display(),
                f.sha256.as_deref().map(|s| format!(" (sha256 {s})")).unwrap_or_default()
            ),
        })
    }

    /// Downloads `url` into `dest`, resuming `<dest>.part` with a `Range` request.
    pub fn download_http(
        &self,
        url: &str,
        dest: &Path,
        size: Option<u64>,
        expected: Option<&str>,
        progress: &(dyn Fn(u64, Option<u64>) + Sync),
    ) -> Result<()> {
        let part = part_path(dest);
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let agent = ureq::AgentBuilder::new().timeout_connect(self.timeout).timeout_read(self.timeout).build();
        let mut req = agent.get(url);
        if have > 0 {
            req = req.set("Range", &format!("bytes={have}-"));
        }
        let resp = match req.call() {
            Ok(r) => r,
            // The part file already holds everything: the server has nothing past its end.
            Err(ureq::Error::Status(416, _)) if have > 0 && size.is_none_or(|s| s == have) => {
                return finish(&part, dest, expected);
            }
            Err(ureq::Error::Status(code, _)) => {
                return Err(DataError::format(dest, format!("{url}: HTTP status {code}")));
            }
            Err(ureq::Error::Transport(t)) => {
                let detail = t.message().map(|m| format!(": {m}")).unwrap_or_default();
                return Err(DataError::format(dest, format!("{url}: {}{detail}", t.kind())));
            }
        };
        let resumed = resp.status() == 206;
        let total = resp
            .header("Content-Length")
            .and_then(|v| v.parse::<u64>().ok())
            .map(|n| if resumed { n + have } else { n })
            .or(size);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(&part)
            .map_err(|e| DataError::io(&part, e))?;
        let mut done = if resumed { have } else { 0 };
        let mut reader = resp.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buf).map_err(|e| {
                DataError::format(&part, format!("download of {url} interrupted after {done} bytes: {e}"))
            })?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).map_err(|e| DataError::io(&part, e))?;
            done += n as u64;
            progress(done, total);
        }
        file.sync_all().map_err(|e| DataError::io(&part, e))?;
        if let Some(t) = total
            && done != t
        {
            return Err(DataError::format(
                &part,
                format!("download of {url} ended at {done} of {t} bytes; run again to resume"),
            ));
        }
        finish(&part, dest, expected)
    }

    /// Fetches a Hub file through `hf-hub` (cache first, then download) and copies it to `dest`.
    pub fn download_hf(&self, hf: &HfLocation, dest: &Path, expected: Option<&str>) -> Result<()> {
        let repo_type = match hf.repo_type.as_str() {
            "dataset" => hf_hub::RepoType::Dataset,
            "model" => hf_hub::RepoType::Model,
            other => return Err(DataError::Config(format!("unknown Hub repo type {other:?}"))),
        };
        let mut builder =
            hf_hub::api::sync::ApiBuilder::new().with_cache_dir(self.root.join("hf")).with_progress(false);
        if let Some(ep) = &self.hf_endpoint {
            builder = builder.with_endpoint(ep.clone());
        }
        let api = builder.build().map_err(|e| DataError::format(dest, format!("hf-hub: {e}")))?;
        let repo = api.repo(hf_hub::Repo::with_revision(hf.repo.clone(), repo_type, hf.revision.clone()));
        let src = repo.get(&hf.path).map_err(|e| DataError::format(dest, format!("hf-hub: {e}")))?;
        let part = part_path(dest);
        std::fs::copy(&src, &part).map_err(|e| DataError::io(&part, e))?;
        finish(&part, dest, expected)
    }
}

/// An error's message without the destination path (the summary names it once).
fn reason(e: &DataError) -> String {
    match e {
        DataError::Format { msg, .. } => msg.clone(),
        other => other.to_string(),
    }
}

fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// Verifies a complete `.part` file and renames it into place; deletes it on a mismatch.
fn finish(part: &Path, dest: &Path, expected: Option<&str>) -> Result<()> {
    if let Some(e) = expected
        && let Err(err) = verify_file(part, e)
    {
        let _ = std::fs::remove_file(part);
        return Err(match err {
            DataError::Checksum { expected, actual, .. } => {
                DataError::Checksum { path: dest.to_path_buf(), expected, actual }
            }
            other => other,
        });
    }
    std::fs::rename(part, dest).map_err(|e| DataError::io(dest, e))
}

/// Writes `bytes` to `path` atomically and durably ([`compress_core::atomic`]: a temporary of
/// this writer's own, synced, then renamed; not the download's shared `.part` name).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    compress_core::atomic::write_with(path, |tmp| {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })
    .map_err(|e| DataError::io(path, e))
}

/// Unpacks `archive` into `into` once: a marker `.<archive>.extracted` records completion; the
/// content goes to a temporary folder first and its entries are then renamed into place.
pub fn extract(archive: &Path, kind: &str, into: &Path) -> Result<()> {
    let name = archive.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let marker = into.join(format!(".{name}.extracted"));
    if marker.is_file() {
        return Ok(());
    }
    let tmp = into.join(format!(".{name}.unpacking"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    let file = std::fs::File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let res = match kind {
        "tar.gz" => tar::Archive::new(flate2::read::GzDecoder::new(file))
            .unpack(&tmp)
            .map_err(|e| DataError::format(archive, format!("cannot unpack: {e}"))),
        "zip" => zip::ZipArchive::new(file)
            .and_then(|mut z| z.extract(&tmp))
            .map_err(|e| DataError::format(archive, format!("cannot unpack: {e}"))),
        other => Err(DataError::Config(format!("unknown archive format {other:?}"))),
    };
    if let Err(e) = res {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    for entry in std::fs::read_dir(&tmp).map_err(|e| DataError::io(&tmp, e))? {
        let entry = entry.map_err(|e| DataError::io(&tmp, e))?;
        let target = into.join(entry.file_name());
        if target.exists() {
            let r = if target.is_dir() { std::fs::remove_dir_all(&target) } else { std::fs::remove_file(&target) };
            r.map_err(|e| DataError::io(&target, e))?;
        }
        std::fs::rename(entry.path(), &target).map_err(|e| DataError::io(&target, e))?;
    }
    std::fs::remove_dir_all(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    write_atomic(&marker, b"ok\n")
}
