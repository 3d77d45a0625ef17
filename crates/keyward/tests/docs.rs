//! Keeps the documents true: every path ARCHITECTURE.md names exists (and
//! it fits one screen), and the README states the two commands.

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
        // A crate's entry (`- **`crates/x`**: …`) names paths inside it.
        if let Some(rest) = line.strip_prefix("- **`") {
            base = root().join(rest.split('`').next().unwrap_or_default());
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
    let lines = text.lines().count();
    assert!(lines <= 60, "ARCHITECTURE.md is a map that fits one screen: {lines} lines, at most 60");
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

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The workspace's crates, in the order they depend on each other.
const CRATES: [&str; 5] = ["keyward-core", "keyward-verifier", "keyward-store", "keyward-server", "keyward"];

/// ARCHITECTURE.md: only keyward-store speaks SQL (names sqlx); only
/// keyward-server speaks HTTP as a server (names axum); the domain names
/// neither. Checked in each crate's code and its [dependencies].
#[test]
fn only_the_store_names_sqlx_and_only_the_server_names_axum() {
    let allowed = [("sqlx", "keyward-store"), ("axum", "keyward-server")];
    let mut checked = 0;
    for krate in CRATES {
        let dir = root().join("crates").join(krate);
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let deps = manifest.split("[dependencies]").nth(1).unwrap_or_default();
        let deps = deps.split("\n[").next().unwrap_or_default();
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        for (name, owner) in allowed {
            let declared = deps
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{name}.")) || l.starts_with(&format!("{name} ")));
            assert!(!declared || krate == owner, "{krate} depends on {name}; only {owner} may");
            for f in &files {
                let text = std::fs::read_to_string(f).unwrap();
                let names = text.contains(&format!("{name}::")) || text.contains(&format!("use {name}"));
                assert!(!names || krate == owner, "{} names {name}; only {owner} may", f.display());
                checked += 1;
            }
        }
    }
    assert!(checked > 40, "looked at the crates' sources ({checked} checks)");
}

/// The lines of the crates' code (tests and benches aside) that contain
/// `needle`, as `path:line`, leaving out the files in `except`.
fn code_naming(needle: &str, except: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for krate in CRATES {
        let mut files = Vec::new();
        rust_files(&root().join("crates").join(krate).join("src"), &mut files);
        for file in files {
            let shown = file.strip_prefix(root()).unwrap_or(&file).display().to_string();
            if except.iter().any(|e| shown.ends_with(e)) {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for (i, line) in text.lines().enumerate() {
                if line.contains(needle) && !line.trim_start().starts_with("//") {
                    found.push(format!("{shown}:{}", i + 1));
                }
            }
        }
    }
    found
}

/// ARCHITECTURE.md: time comes from the `Clock` (tests move it), never from
/// the system directly.
#[test]
fn only_the_clock_reads_the_wall_clock() {
    for needle in ["Utc::now", "SystemTime::now", "Local::now"] {
        let found = code_naming(needle, &["keyward-server/src/clock.rs", "keyward-verifier/src/clock.rs"]);
        assert!(found.is_empty(), "{needle} outside clock.rs: {found:?}");
    }
}

/// ARCHITECTURE.md: every change commits through the one unit of work,
/// which also updates this node's caches; nothing else does either.
#[test]
fn only_the_unit_of_work_commits_and_updates_caches() {
    let work = "keyward-server/src/work.rs";
    for needle in ["store.commit(", "cache().put(", "cache.put(", "_changed(", "access_token_revoked("] {
        let found: Vec<String> = code_naming(needle, &[work, "keyward-server/src/verifier.rs"])
            .into_iter()
            .filter(|f| f.starts_with("crates/keyward-server/"))
            .collect();
        assert!(found.is_empty(), "{needle} outside the unit of work: {found:?}");
    }
    let verifier = std::fs::read_to_string(root().join("crates/keyward-server/src/verifier.rs")).unwrap();
    assert!(!verifier.contains("store.commit("), "the verifier commits through the unit of work");
}

/// ARCHITECTURE.md: the domain and the verifier are synchronous and know
/// no runtime; only the verifier's feature `client` (the embedded verifier
/// and its layer) brings one.
#[test]
fn the_domain_and_the_verifier_name_no_runtime() {
    let client = ["keyward-verifier/src/embedded.rs", "keyward-verifier/src/layer.rs"];
    for krate in ["keyward-core", "keyward-verifier"] {
        let manifest = std::fs::read_to_string(root().join("crates").join(krate).join("Cargo.toml")).unwrap();
        let dependencies = manifest.split("[dev-dependencies]").next().unwrap();
        for line in dependencies.lines().filter(|l| l.starts_with("tokio")) {
            assert!(line.contains("optional = true"), "{krate} depends on tokio: {line}");
        }
        let found: Vec<String> =
            code_naming("tokio", &client).into_iter().filter(|f| f.starts_with(&format!("crates/{krate}/"))).collect();
        assert!(found.is_empty(), "{krate} names tokio: {found:?}");
    }
    let verifier = std::fs::read_to_string(root().join("crates/keyward-verifier/Cargo.toml")).unwrap();
    assert!(verifier.contains("client = [\"dep:tokio\""), "tokio comes with the feature client alone");
}

/// ARCHITECTURE.md: the hot path depends on the domain alone, so an
/// embedded verifier can take it without the store or the server.
#[test]
fn the_verifier_depends_on_the_domain_alone() {
    let manifest = std::fs::read_to_string(root().join("crates/keyward-verifier/Cargo.toml")).unwrap();
    let deps = manifest.split("[dependencies]").nth(1).unwrap_or_default();
    let deps = deps.split("\n[").next().unwrap_or_default();
    let ours: Vec<&str> = deps.lines().filter(|l| l.starts_with("keyward")).collect();
    assert_eq!(ours, ["keyward-core.workspace = true"], "keyward-verifier's keyward dependencies");
    let found = code_naming("keyward_s", &[]);
    let found: Vec<&String> = found.iter().filter(|f| f.starts_with("crates/keyward-verifier/")).collect();
    assert!(found.is_empty(), "keyward-verifier names the store or the server: {found:?}");
}

/// `docs/secret-scanning/keyward-scan` (the gitleaks rules, then the
/// checksum) finds planted keys, secret and publishable, and ignores
/// look-alikes whose checksum is wrong; it reports hashes, never keys.
#[test]
fn the_secret_scanner_finds_keys_and_ignores_look_alikes() {
    use keyward_core::token::{Environment, generate};
    let dir = tempfile::tempdir().unwrap();
    let live = generate("kw", Environment::Live).expose().to_owned();
    let test = generate("kw", Environment::Test).expose().to_owned();
    let publishable = generate("kwpk", Environment::Live).expose().to_owned();
    // One character of the secret changed: the checksum no longer fits.
    let mut look_alike = generate("kw", Environment::Live).expose().to_owned();
    let at = look_alike.len() - 10;
    let swapped = if &look_alike[at..=at] == "A" { "B" } else { "A" };
    look_alike.replace_range(at..=at, swapped);
    std::fs::write(dir.path().join("config.env"), format!("API_KEY={live}\nOTHER=1\n")).unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(
        dir.path().join("src/app.js"),
        format!("const a = \"{test}\";\nconst b = '{publishable}';\n// example: {look_alike}\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("README"), "kw_live_ is the prefix; kw_live_short is not a key\n").unwrap();
    let out = std::process::Command::new("python3")
        .arg(root().join("docs/secret-scanning/keyward-scan"))
        .arg(dir.path())
        .output()
        .expect("python3 runs the scanner");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "keys found: exit 1\n{stdout}");
    let found: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let sha = |t: &str| -> String {
        use sha2::Digest;
        sha2::Sha256::digest(t.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    };
    let mut hashes: Vec<String> = found.iter().map(|f| f["token_hash"].as_str().unwrap().to_owned()).collect();
    hashes.sort();
    let mut expected = vec![sha(&live), sha(&test), sha(&publishable)];
    expected.sort();
    assert_eq!(hashes, expected, "{stdout}");
    assert!(!stdout.contains(&live) && !stdout.contains(&look_alike));
    let rules: Vec<&str> = found.iter().map(|f| f["rule"].as_str().unwrap()).collect();
    assert_eq!(rules.iter().filter(|r| **r == "keyward-publishable-key").count(), 1);
    // Nothing found: exit 0.
    let clean = tempfile::tempdir().unwrap();
    std::fs::write(clean.path().join("x"), format!("{look_alike}\n")).unwrap();
    let out = std::process::Command::new("python3")
        .arg(root().join("docs/secret-scanning/keyward-scan"))
        .arg(clean.path())
        .output()
        .unwrap();
    assert_eq!((out.status.code(), out.stdout.is_empty()), (Some(0), true));
}
