//! A real FTP server asks keyward: Debian's pure-ftpd with its external
//! authentication (`pure-authd` running `keyward ftp-auth` through
//! docs/recipes/keyward-ftp-auth), and Python's ftplib as the FTP client. Skips with a
//! message when pure-ftpd is absent; fails instead under CI=true.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keyward_store::testing::run::{Piece, ran, skipped};
use serde_json::json;

use crate::helpers::spawn_app;

backend_tests!(pure_ftpd_logs_in_with_the_workspace_ftp_credentials);

/// Stops the child when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-s", "TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn wait_for(what: &str, ready: impl Fn() -> bool) {
    for _ in 0..100 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not start");
}

/// Logs in with ftplib and stores `name`; "stored", or the server's refusal.
fn ftp_store(python: &Path, port: u16, user: &str, password: &str, name: &str) -> String {
    const SCRIPT: &str = r#"
import ftplib, io, sys
port, user, password, name = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", port, timeout=10)
try:
    ftp.login(user, password)
except ftplib.error_perm as e:
    print("refused:", str(e).split()[0])
    sys.exit(0)
ftp.storbinary("STOR " + name, io.BytesIO(b"uploaded through keyward's FTP credentials\n"))
print("stored")
ftp.quit()
"#;
    let out = Command::new(python)
        .args(["-c", SCRIPT, &port.to_string(), user, password, name])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "ftplib failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn pure_ftpd_logs_in_with_the_workspace_ftp_credentials() {
    const TEST: &str = "pure_ftpd_logs_in_with_the_workspace_ftp_credentials";
    let (ftpd, authd) = ("/usr/sbin/pure-ftpd", "/usr/sbin/pure-authd");
    if !Path::new(ftpd).exists() || !Path::new(authd).exists() {
        skipped(Piece::PureFtpd, TEST, "pure-ftpd is not installed");
        return;
    }
    ran(Piece::PureFtpd, TEST, "pure-ftpd");
    let python = Path::new("python3");
    let app = spawn_app().await;
    let server_key = app.create_key(json!({"name": "pure-ftpd", "scopes": ["ftp:authenticate"]})).await.secret;
    let r = app.patch("/v1/workspace", json!({"siteId": "site_ftp1"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rotated = app.post_empty("/v1/integrations/ftp/rotate").await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let (user, before) = (rotated.str("username"), rotated.str("password"));
    assert_eq!(user, "site_ftp1");

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ftp");
    std::fs::create_dir(&root).unwrap();
    use std::os::unix::fs::PermissionsExt;
    // FTP sessions run as nobody: the way to their homes is open to them.
    for path in [dir.path(), root.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The recipe pure-authd runs, as docs/recipes/keyward-ftp-auth gives it.
    let recipe =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/recipes/keyward-ftp-auth")).unwrap();
    let script_text = recipe
        .replace("http://127.0.0.1:8080", &format!("http://{}", app.addr))
        .replace("kw_live_REPLACE_WITH_A_KEY_HOLDING_FTP_AUTHENTICATE", &server_key)
        .replace("/usr/local/bin/keyward ", &format!("{} ", env!("CARGO_BIN_EXE_keyward")))
        .replace("--root /srv/ftp", &format!("--root {}", root.display()));
    assert!(!script_text.contains("REPLACE") && !script_text.contains("/srv/ftp "), "{script_text}");
    let script = dir.path().join("keyward-ftp-auth");
    std::fs::write(&script, script_text).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    let socket = dir.path().join("authd.sock");
    let _authd = Daemon(
        Command::new(authd).arg("-s").arg(&socket).arg("-r").arg(&script).stdout(Stdio::null()).spawn().unwrap(),
    );
    wait_for("pure-authd", || socket.exists()).await;
    let port = free_port();
    let passive = free_port();
    let _ftpd = Daemon(
        Command::new(ftpd)
            .args(["-S", &format!("127.0.0.1,{port}")])
            .arg("-l")
            .arg(format!("extauth:{}", socket.display()))
            // No anonymous logins; homes made on first login; chrooted.
            .args(["-E", "-j", "-A", "-u", "1000"])
            .args(["-p", &format!("{passive}:{passive}")])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("pure-ftpd", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()).await;

    // The workspace's credentials store a file in the site's home.
    let python = python.to_path_buf();
    let store = |user: String, password: String, name: &'static str| {
        let python = python.clone();
        tokio::task::spawn_blocking(move || ftp_store(&python, port, &user, &password, name))
    };
    assert_eq!(store(user.clone(), before.clone(), "one.txt").await.unwrap(), "stored");
    let stored = std::fs::read_to_string(root.join("site_ftp1/one.txt")).unwrap();
    assert!(stored.starts_with("uploaded through"), "{stored}");

    // A wrong password, and the password from before a rotation: refused.
    assert_eq!(store(user.clone(), "wrong password".into(), "two.txt").await.unwrap(), "refused: 530");
    let after = app.post_empty("/v1/integrations/ftp/rotate").await.str("password");
    assert_eq!(store(user.clone(), before, "three.txt").await.unwrap(), "refused: 530");
    assert_eq!(store(user.clone(), after, "four.txt").await.unwrap(), "stored");
    assert!(!root.join("site_ftp1/two.txt").exists() && !root.join("site_ftp1/three.txt").exists());
}
