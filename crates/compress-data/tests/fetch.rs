//! The download path, tested against a loopback HTTP server and hf-hub's cache layout: never
//! the internet.

use compress_data::DataError;
use compress_data::checksum::sha256_bytes;
use compress_data::fetch::{Fetcher, FileOutcome};
use compress_data::manifest::Manifest;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A one-file HTTP/1.1 server on 127.0.0.1 that honours `Range: bytes=N-`. The first
/// `cut_first` requests stop after sending `cut_at` body bytes, as a dropped connection would.
struct Server {
    port: u16,
    ranges: Arc<Mutex<Vec<Option<u64>>>>,
}

impl Server {
    fn start(body: Vec<u8>, cut_first: usize, cut_at: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("addr").port();
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let seen = ranges.clone();
        std::thread::spawn(move || {
            // Bounded: at most 8 connections, then the thread ends.
            for (i, stream) in listener.incoming().take(8).enumerate() {
                let Ok(mut s) = stream else { continue };
                let mut reader = BufReader::new(s.try_clone().expect("clone"));
                let mut range = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        range = v.trim().trim_end_matches('-').parse::<u64>().ok();
                    }
                }
                seen.lock().expect("lock").push(range);
                let start = range.unwrap_or(0) as usize;
                let rest = &body[start.min(body.len())..];
                let head = if range.is_some() {
                    format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{}\r\nConnection: close\r\n\r\n",
                        rest.len(),
                        start,
                        body.len() - 1,
                        body.len()
                    )
                } else {
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", rest.len())
                };
                let _ = s.write_all(head.as_bytes());
                let send = if i < cut_first { &rest[..cut_at.min(rest.len())] } else { rest };
                let _ = s.write_all(send);
                let _ = s.flush();
            }
        });
        Self { port, ranges }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/data.bin", self.port)
    }
}

fn manifest(url: &str, sha: Option<&str>) -> Manifest {
    let sha = sha.map(|s| format!("sha256 = \"{s}\"\n")).unwrap_or_default();
    Manifest::parse(
        &format!(
            "[[dataset]]\nname = \"toy\"\ndescription = \"d\"\nlicense = \"l\"\ninstructions = \"copy data.bin from the toy mirror\"\n[[dataset.file]]\nname = \"data.bin\"\n{sha}urls = [\"{url}\"]\n"
        ),
        Path::new("test.toml"),
    )
    .expect("manifest")
}

fn body() -> Vec<u8> {
    (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn downloads_verifies_and_then_uses_the_cache() {
    let data = body();
    let server = Server::start(data.clone(), 0, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let m = manifest(&server.url(), Some(&sha256_bytes(&data)));
    let f = Fetcher::new(dir.path());
    let r = f.fetch(m.get("toy").expect("toy"), &|_, _, _| {}).expect("fetch");
    assert_eq!(r.files[0].1, FileOutcome::Downloaded(server.url()));
    assert_eq!(std::fs::read(dir.path().join("toy/data.bin")).expect("read"), data);
    assert!(!dir.path().join("toy/data.bin.part").exists());
    let again = f.fetch(m.get("toy").expect("toy"), &|_, _, _| {}).expect("cached");
    assert_eq!(again.files[0].1, FileOutcome::Cached);
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let data = body();
    let server = Server::start(data.clone(), 1, 70_000);
    let dir = tempfile::tempdir().expect("tempdir");
    // No published checksum: the digest is recorded at first download (trust on first use).
    let m = manifest(&server.url(), None);
    let f = Fetcher::new(dir.path());
    let e = f.fetch(m.get("toy").expect("toy"), &|_, _, _| {}).expect_err("cut off");
    assert!(e.to_string().contains("data.bin"), "{e}");
    let part = dir.path().join("toy/data.bin.part");
    assert_eq!(std::fs::metadata(&part).expect("part kept").len(), 70_000);
    assert!(!dir.path().join("toy/data.bin").exists(), "nothing half-written under the final name");
    f.fetch(m.get("toy").expect("toy"), &|_, _, _| {}).expect("resumed");
    assert_eq!(std::fs::read(dir.path().join("toy/data.bin")).expect("read"), data);
    assert_eq!(*server.ranges.lock().expect("lock"), vec![None, Some(70_000)]);
    let sums = std::fs::read_to_string(dir.path().join("toy/SHA256SUMS")).expect("sums");
    assert!(sums.contains(&sha256_bytes(&data)), "{sums}");
}

#[test]
fn a_checksum_mismatch_leaves_nothing_behind() {
    let server = Server::start(body(), 0, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let m = manifest(&server.url(), Some(&"ab".repeat(32)));
    let e = Fetcher::new(dir.path()).fetch(m.get("toy").expect("toy"), &|_, _, _| {}).expect_err("mismatch");
    assert!(matches!(e, DataError::Checksum { .. }), "{e}");
    assert!(e.to_string().contains("data.bin"), "{e}");
    assert!(!dir.path().join("toy/data.bin").exists());
    assert!(!dir.path().join("toy/data.bin.part").exists());
}

#[test]
fn offline_names_the_dataset_the_source_and_the_manual_route() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let dir = tempfile::tempdir().expect("tempdir");
    let m = manifest("http://127.0.0.1:1/data.bin", None);
    let e = Fetcher::new(dir.path()).fetch(m.get("toy").expect("toy"), &|_, _, _| {}).expect_err("offline");
    let msg = e.to_string();
    assert!(
        msg.contains("toy") && msg.contains("127.0.0.1:1") && msg.contains("copy data.bin from the toy mirror"),
        "{msg}"
    );
    assert!(msg.contains("by hand"), "{msg}");
    // A failed first fetch leaves no empty dataset folder behind.
    assert!(!dir.path().join("toy").exists(), "an empty dataset folder was left");
    assert!(!dir.path().join("toy/data.bin.part").exists());
}

#[test]
fn an_empty_cache_variable_is_unset_not_the_current_directory() {
    // SAFETY: this test binary's only test that touches the environment.
    unsafe { std::env::set_var(compress_data::fetch::CACHE_ENV, "") };
    let root = compress_data::fetch::default_cache_root();
    assert_ne!(root, std::path::PathBuf::from(""), "an empty COMPRESS_DATA meant the current directory");
    assert!(root.ends_with("compress-rs") || root.ends_with(".data-cache"), "{}", root.display());
}

#[test]
fn manual_datasets_explain_themselves() {
    let m = Manifest::parse(
        "[[dataset]]\nname = \"big\"\ndescription = \"d\"\nlicense = \"l\"\nmanual = true\ninstructions = \"register first\"\n",
        Path::new("m.toml"),
    )
    .expect("manifest");
    let dir = tempfile::tempdir().expect("tempdir");
    let e = Fetcher::new(dir.path()).fetch(m.get("big").expect("big"), &|_, _, _| {}).expect_err("manual");
    assert!(e.to_string().contains("register first"), "{e}");
}

#[test]
fn hub_files_come_through_hf_hub_and_archives_unpack() {
    // A tar.gz holding one PNG-named file, placed in hf-hub's cache layout:
    // <cache>/hf/datasets--org--set/{refs/main, snapshots/<commit>/data/set.tar.gz}.
    let mut tarball = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut tarball, flate2::Compression::fast());
        let mut t = tar::Builder::new(gz);
        let content = b"not really a png";
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, "Set_HR/img.png", &content[..]).expect("append");
        t.into_inner().expect("tar").finish().expect("gz");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("hf/datasets--org--set");
    std::fs::create_dir_all(repo.join("refs")).expect("mkdir");
    std::fs::write(repo.join("refs/main"), "0123abcd").expect("ref");
    std::fs::create_dir_all(repo.join("snapshots/0123abcd/data")).expect("mkdir");
    std::fs::write(repo.join("snapshots/0123abcd/data/set.tar.gz"), &tarball).expect("blob");
    let m = Manifest::parse(
        &format!(
            "[[dataset]]\nname = \"set\"\ndescription = \"d\"\nlicense = \"l\"\ninstructions = \"i\"\n[[dataset.file]]\nname = \"set.tar.gz\"\nsha256 = \"{}\"\nextract = \"tar.gz\"\nhf = {{ repo = \"org/set\", path = \"data/set.tar.gz\" }}\n",
            sha256_bytes(&tarball)
        ),
        Path::new("m.toml"),
    )
    .expect("manifest");
    // An endpoint where nothing listens: only the cache can answer.
    let f = Fetcher::new(dir.path()).with_hf_endpoint("http://127.0.0.1:1");
    let r = f.fetch(m.get("set").expect("set"), &|_, _, _| {}).expect("from cache");
    assert_eq!(r.files[0].1, FileOutcome::Downloaded("hf://org/set/data/set.tar.gz".into()));
    assert_eq!(std::fs::read(dir.path().join("set/Set_HR/img.png")).expect("unpacked"), b"not really a png");
    assert!(dir.path().join("set/.set.tar.gz.extracted").is_file());
}

#[test]
fn a_file_placed_by_hand_is_accepted_and_a_wrong_one_replaced() {
    let data = body();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("toy")).expect("mkdir");
    std::fs::write(dir.path().join("toy/data.bin"), b"by hand").expect("w");
    // No published digest, nothing listening: the hand-placed file is taken as it is.
    let offline = manifest("http://127.0.0.1:1/data.bin", None);
    let r = Fetcher::new(dir.path()).fetch(offline.get("toy").expect("toy"), &|_, _, _| {}).expect("by hand");
    assert_eq!(r.files[0].1, FileOutcome::Cached);
    // With a published digest it does not match, so it is fetched again.
    let server = Server::start(data.clone(), 0, 0);
    let m = manifest(&server.url(), Some(&sha256_bytes(&data)));
    Fetcher::new(dir.path()).fetch(m.get("toy").expect("toy"), &|_, _, _| {}).expect("replaced");
    assert_eq!(std::fs::read(dir.path().join("toy/data.bin")).expect("read"), data);
}
