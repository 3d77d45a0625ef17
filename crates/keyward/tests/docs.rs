//! Keeps the documents true: every path ARCHITECTURE.md names exists, and
//! the README states the two commands.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn looks_like_path(s: &str) -> bool {
    !s.starts_with('/')
        && !s.contains(' ')
        && !s.contains("::")
        && (s.contains('/') || [".rs", ".md", ".toml", ".sql"].iter().any(|e| s.ends_with(e)))
}

#[test]
fn architecture_names_only_paths_that_exist() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut base = root();
    let mut checked = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("### `") {
            base = root().join(rest.trim_end_matches('`'));
        }
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 1 && looks_like_path(part) {
                assert!(
                    base.join(part).exists() || root().join(part).exists(),
                    "ARCHITECTURE.md names {part}, which does not exist"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 10, "expected ARCHITECTURE.md to name its paths ({checked} found)");
}

#[test]
fn readme_opens_with_the_two_commands() {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let head: String = text.lines().take(12).collect::<Vec<_>>().join("\n");
    assert!(head.contains("cargo run --release -- serve"));
    assert!(head.contains("cargo test --workspace"));
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(ci.contains("cargo test --workspace"), ".ci/run runs the README's test command");
}
