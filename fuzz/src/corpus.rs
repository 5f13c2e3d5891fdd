//! The corpora in `fuzz/corpus/<target>/`: read as seeds, written by
//! `MQ_FUZZ_BLESS=1`, and where failing inputs are saved for adding to them.

use std::path::{Path, PathBuf};

fn dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// Every file of the target's corpus, by name, in name order.
pub(crate) fn load(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = dir(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "fuzz {target}: no corpus at {} ({e}); MQ_FUZZ_BLESS=1 writes its valid seeds",
            dir.display()
        )
    });
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|entry| {
            let path = entry.expect("listing the corpus").path();
            let bytes =
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, bytes)
        })
        .collect();
    files.sort();
    files
}

/// Under `MQ_FUZZ_BLESS=1`, replaces the corpus's `valid-*` files by the
/// seeds the encoder makes now; other files (edge cases, regressions) stay.
pub(crate) fn bless(target: &str, seeds: &[(String, Vec<u8>)]) {
    if std::env::var_os("MQ_FUZZ_BLESS").is_none_or(|v| v != "1") {
        return;
    }
    let dir = dir(target);
    std::fs::create_dir_all(&dir).expect("creating the corpus folder");
    for entry in std::fs::read_dir(&dir).expect("listing the corpus") {
        let path = entry.expect("listing the corpus").path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("valid-"))
        {
            std::fs::remove_file(&path).expect("removing an old seed");
        }
    }
    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("valid-{name}")), bytes).expect("writing a seed");
    }
}

/// Saves a failing input under the temp directory; returns where.
pub(crate) fn save_crash(target: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join("mq-fuzz");
    let path = dir.join(format!("{target}-{:016x}", fnv1a(bytes)));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, bytes)) {
        eprintln!(
            "fuzz {target}: could not save the input to {}: {e}",
            path.display()
        );
    }
    path
}

/// A name for an input that is the same each time it is found.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
