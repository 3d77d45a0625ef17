//! Real GnuPG (`gpg`) in a throwaway home: makes keys, exports them,
//! encrypts and decrypts, so that keyward is checked against it both ways.
//! Without `gpg` the tests that need it skip with a message; under
//! `CI=true` (where `.ci/run` installs it) they fail instead. (Shared by
//! test binaries that each use some of it.)
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

pub struct Gpg {
    home: tempfile::TempDir,
}

/// The key kinds the tests make.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// RSA 3072 (primary signs, a subkey encrypts).
    Rsa3072,
    /// Ed25519 primary and a Curve25519 encryption subkey.
    Ed25519,
    /// Ed25519 alone: it can sign, not encrypt.
    SignOnly,
}

impl Gpg {
    /// A fresh GnuPG home, or `None` (with a printed reason) without gpg.
    pub fn new(test: &str) -> Option<Gpg> {
        let found = Command::new("gpg").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
        use keyward_store::testing::run::{Piece, ran, skipped};
        if !found.is_ok_and(|s| s.success()) {
            skipped(Piece::GnuPg, test, "gpg is not installed");
            return None;
        }
        ran(Piece::GnuPg, test, "gpg");
        let home = tempfile::Builder::new().prefix("kw-gpg").tempdir_in("/tmp").unwrap();
        std::fs::write(home.path().join("gpg-agent.conf"), "allow-loopback-pinentry\n").unwrap();
        std::fs::set_permissions(home.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        Some(Gpg { home })
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", self.home.path()).args(["--batch", "--quiet", "--no-tty", "--pinentry-mode", "loopback"]);
        c
    }

    #[track_caller]
    fn run(&self, args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gpg runs");
        let mut stdin = child.stdin.take().unwrap();
        let data = input.map(<[u8]>::to_vec).unwrap_or_default();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(out.status.success(), "gpg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    /// Makes a key for `uid` (with `passphrase`, or none when empty) that
    /// expires in `expires` (`never`, `1d`, …); its fingerprint as gpg
    /// prints it.
    pub fn generate(&self, uid: &str, kind: Kind, passphrase: &str, expires: &str) -> String {
        let p = ["--passphrase", passphrase];
        let primary = match kind {
            Kind::Rsa3072 => "rsa3072",
            Kind::Ed25519 | Kind::SignOnly => "ed25519",
        };
        self.run(&[&p[..], &["--quick-gen-key", uid, primary, "sign", expires]].concat(), None);
        let fpr = self.fingerprint(uid);
        let sub = match kind {
            Kind::Rsa3072 => Some("rsa3072"),
            Kind::Ed25519 => Some("cv25519"),
            Kind::SignOnly => None,
        };
        if let Some(sub) = sub {
            self.run(&[&p[..], &["--quick-add-key", &fpr, sub, "encr", expires]].concat(), None);
        }
        fpr
    }

    /// Adds an encryption subkey of `algo` (`cv25519`, `rsa3072`, …).
    pub fn add_subkey(&self, fpr: &str, algo: &str, passphrase: &str) {
        self.run(&["--passphrase", passphrase, "--quick-add-key", fpr, algo, "encr", "never"], None);
    }

    /// The primary key's fingerprint of the key `who` names.
    pub fn fingerprint(&self, who: &str) -> String {
        let out = String::from_utf8(self.run(&["--with-colons", "--list-keys", who], None)).unwrap();
        let line = out.lines().find(|l| l.starts_with("fpr:")).expect("a fingerprint");
        line.split(':').nth(9).unwrap().to_owned()
    }

    pub fn export_public(&self, who: &[&str]) -> String {
        String::from_utf8(self.run(&[&["--armor", "--export"][..], who].concat(), None)).unwrap()
    }

    pub fn export_secret(&self, fpr: &str, passphrase: &str) -> String {
        let out = self.run(&["--passphrase", passphrase, "--armor", "--export-secret-keys", fpr], None);
        String::from_utf8(out).unwrap()
    }

    /// Binary (`--export`), base64-encoded.
    pub fn export_public_base64(&self, fpr: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.run(&["--export", fpr], None))
    }

    pub fn import(&self, armored: &str) {
        self.run(&["--import"], Some(armored.as_bytes()));
    }

    /// Encrypts to `fpr` (trusted as given), binary.
    pub fn encrypt(&self, fpr: &str, data: &[u8]) -> Vec<u8> {
        self.run(&["--trust-model", "always", "--encrypt", "--recipient", fpr, "--output", "-"], Some(data))
    }

    pub fn decrypt(&self, passphrase: &str, data: &[u8]) -> Vec<u8> {
        self.run(&["--passphrase", passphrase, "--decrypt", "--output", "-"], Some(data))
    }

    /// The GnuPG home (`GNUPGHOME`), for running gpg directly.
    pub fn home(&self) -> &std::path::Path {
        self.home.path()
    }
}
