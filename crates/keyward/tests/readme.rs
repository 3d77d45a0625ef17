//! The README runs as pasted: every `sh` block of its Quick start, OAuth
//! 2.0, PGP keys, Integrations and CLI sections, in order, in one bash session against a
//! fresh `keyward serve` started where the text starts it (its admin key in
//! `KEY`, as the text asks; its address for `127.0.0.1:8080`). A command
//! that fails, or a `curl` answered with an HTTP error, fails the block;
//! each `# → …` line's text up to its first `…` must appear in what the
//! block printed. Needs bash, curl, jq and gpg (skips without them, fails
//! under CI=true).

use std::path::Path;
use std::process::Command;

use keyward_store::testing::run::{Piece, ran, skipped};

mod support;

const SECTIONS: &[&str] = &[
    "Quick start",
    "OAuth 2.0",
    "PGP keys",
    "Integrations",
    "Webhooks and leaked keys",
    "Safe retries and batches",
    "CLI",
];
const TEST: &str = "readme_examples_run_as_pasted";

/// The `sh` blocks of the README's section `title`, in order.
fn blocks(readme: &str, title: &str) -> Vec<String> {
    let start = readme.find(&format!("\n## {title}\n")).unwrap_or_else(|| panic!("README has a {title} section"));
    let rest = &readme[start + title.len() + 5..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut out = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "```sh" {
            let indent = line.len() - line.trim_start().len();
            let body: Vec<&str> =
                lines.by_ref().take_while(|l| l.trim() != "```").map(|l| &l[indent.min(l.len())..]).collect();
            out.push(body.join("\n"));
        }
    }
    out
}

fn installed(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

#[test]
fn readme_examples_run_as_pasted() {
    if let Some(missing) = ["bash", "curl", "jq", "gpg"].into_iter().find(|t| !installed(t)) {
        skipped(Piece::Shell, TEST, &format!("{missing} is not installed"));
        return;
    }
    ran(Piece::Shell, TEST, "bash, curl, jq and gpg");
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut script = String::from("set -eo pipefail\ncurl() { command curl --fail-with-body \"$@\"; }\n");
    let mut node = None;
    let mut names = Vec::new();
    for title in SECTIONS {
        for (i, block) in blocks(&readme, title).into_iter().enumerate() {
            if block.starts_with("cargo run --release -- serve") {
                // What the text starts: keyward, in the directory the
                // commands after it run in (./keyward-data).
                node = Some(support::serve_in(dir.path(), &["--log-level", "warn"]));
                continue;
            }
            let node = node.as_ref().expect("the README starts keyward before its first example");
            let address = node.base.trim_start_matches("http://");
            let mut body = String::new();
            for line in block.lines() {
                let code = line.split(" #").next().unwrap_or(line);
                if line.trim() == "export KEY=kw_live_…" {
                    body.push_str(&format!("export KEY={}\n", node.admin.as_deref().expect("bootstrapped")));
                    continue;
                }
                assert!(
                    code.trim_start().starts_with('#') || !code.contains('…'),
                    "{title}, block {}: a placeholder to fill in by hand: {line}",
                    i + 1
                );
                body.push_str(&line.replace("127.0.0.1:8080", address).replace("localhost:8080", address));
                body.push('\n');
            }
            script.push_str(&format!("printf '\\n@@ {}\\n'\n{body}", names.len()));
            names.push((format!("{title}, block {}", i + 1), block));
        }
    }
    // The README's keyring has an agent of its own: stop it.
    script.push_str("\ncommand -v gpgconf >/dev/null && gpgconf --kill all || true\n");
    let bin_dir = Path::new(support::BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("GNUPGHOME", dir.path().join("gnupg-unused"))
        .env_remove("KEY")
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // What each block printed, by the markers between them.
    let mut printed: Vec<String> = vec![String::new(); names.len()];
    let mut current = None;
    for line in stdout.lines() {
        if let Some(n) = line.strip_prefix("@@ ") {
            current = n.parse::<usize>().ok();
        } else if let Some(n) = current {
            printed[n].push_str(line);
            printed[n].push('\n');
        }
    }
    let last = current.map(|n| names[n].0.as_str()).unwrap_or("before the first block");
    assert!(
        out.status.success(),
        "{last} failed ({}):\n{}\nstderr:\n{stderr}",
        out.status,
        printed[current.unwrap_or(0)]
    );
    assert_eq!(current, Some(names.len() - 1), "every block ran");
    for ((name, block), printed) in names.iter().zip(&printed) {
        for expected in block.lines().filter_map(|l| l.trim_start().strip_prefix("# → ")) {
            let prefix = expected.split('…').next().unwrap();
            assert!(printed.contains(prefix), "{name}: expected {prefix:?} in what it printed:\n{printed}");
        }
    }
    println!("{} README blocks ran", names.len());
}
