//! A redis-server of a test's own, for the tests that kill, pause or
//! replicate it: its own port and directory, `appendonly yes` and
//! `appendfsync always` (every acknowledged write is on disk), no RDB
//! snapshots. The binary comes from `OXIFLOW_TEST_REDIS_SERVER`
//! (`scripts/test.sh` exports it).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    binary: PathBuf,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one, or `None` (outside CI) when no binary is configured.
    pub fn start(extra: &[&str]) -> Option<Self> {
        let Some(binary) = std::env::var_os("OXIFLOW_TEST_REDIS_SERVER") else {
            assert!(std::env::var_os("CI").is_none(), "redis-server must run in CI; run the tests through scripts/test.sh");
            eprintln!("SKIPPED: OXIFLOW_TEST_REDIS_SERVER is not set (scripts/test.sh sets it)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = RedisServer {
            port,
            binary: binary.into(),
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.launch();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn launch(&mut self) {
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--daemonize", "no", "--dir"])
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls until the server answers PING with PONG (not LOADING).
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.command("PING").is_some_and(|r| r.starts_with("+PONG")) {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("redis-server on port {} exited: {status}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer within 20 s", self.port);
    }

    /// One inline command; the first reply line, or `None` if unreachable.
    pub fn command(&self, line: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(format!("{line}\r\n").as_bytes()).ok()?;
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// SIGKILL: no shutdown, no final fsync beyond what each write did.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts again on the same port with the same directory (its AOF).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        self.launch();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}
