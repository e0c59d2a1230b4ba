//! Harness for the end-to-end tests: runs the real `mpayd` binary on a temporary data folder and
//! talks to it over real sockets, as a sysadmin, the node or an authority would.

pub mod pki;
pub mod xsd;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The `mpayd` binary of this build: next to the test executable's `deps` folder. `MPAYD_BIN`
/// overrides it.
pub fn mpayd_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MPAYD_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target folder");
    let bin = dir.join("mpayd");
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// The `mpay` console binary of this build, beside `mpayd`. `MPAY_BIN` overrides it.
pub fn mpay_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MPAY_BIN") {
        return PathBuf::from(p);
    }
    mpayd_bin().with_file_name("mpay")
}

/// Runs `mpay ARGS` against the console socket `socket`; returns its output.
pub fn mpay(socket: &Path, args: &[&str]) -> Output {
    Command::new(mpay_bin())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run mpay")
}

/// Runs `mpayd ARGS` to completion.
pub fn mpayd(args: &[&str]) -> Output {
    Command::new(mpayd_bin())
        .args(args)
        .output()
        .expect("run mpayd")
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A minimal HTTP/1.1 GET; returns the status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    http_request(addr, "GET", path, &[], b"")
}

/// A minimal HTTP/1.1 POST with extra headers; returns the status code and body.
pub fn http_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    http_request(addr, "POST", path, headers, body)
}

/// A minimal HTTP/1.1 request with any method and extra headers; returns the status and body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
    out
}

/// Where the demo's station listens for SOAP requests.
/// The storage engine the daemons under test use: `MPAY_STORE_ENGINE` (which they read
/// where their configuration names none), sled if unset.
pub fn engine() -> String {
    std::env::var("MPAY_STORE_ENGINE").unwrap_or_else(|_| "sled".to_string())
}

/// The engine's files in a store folder: what damage tests damage and compare.
pub fn engine_files(store: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("list store files").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    match engine().as_str() {
        "fjall" => walk(&store.join("fjall"), &mut files),
        _ => files.push(store.join("db")),
    }
    files.sort();
    files
}

pub const STATION_PATH: &str = "/pagopa/paForNode";

/// A running mpayd.
pub struct Daemon {
    pub child: Child,
    pub admin: SocketAddr,
    /// The station listener (where the node calls); the demo's path is `STATION_PATH`.
    pub station: SocketAddr,
    /// The authorities' REST API listener (the demo's; for `run`, whatever the file says).
    pub api: Option<SocketAddr>,
    /// The console socket, once known from the ready file.
    pub console: Option<PathBuf>,
    /// The remote consoles' TLS listener, when configured.
    pub remote_console: Option<SocketAddr>,
    /// Where a demo daemon reports its listeners once they are bound.
    ready_file: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// The daemon runs under this program (e.g. strace), which is then `child`.
    wrapped: bool,
}

impl Daemon {
    /// `mpayd demo` with `positions` generated positions in `data_dir`, without background
    /// traffic. The daemon picks free ports itself and reports them in a ready file, so parallel
    /// tests never race for a port.
    pub fn demo(data_dir: &Path, positions: u64) -> Daemon {
        Daemon::demo_under(&[], data_dir, positions)
    }

    /// `mpayd demo` run by `wrapper` (a program and its arguments, e.g. strace), which is given
    /// the mpayd command line to run.
    pub fn demo_under(wrapper: &[&str], data_dir: &Path, positions: u64) -> Daemon {
        Daemon::demo_with(wrapper, data_dir, positions, &["--traffic", "0"])
    }

    /// `mpayd demo` with more arguments (`--traffic 0` is not implied).
    pub fn demo_with(wrapper: &[&str], data_dir: &Path, positions: u64, more: &[&str]) -> Daemon {
        let ready_file = data_dir.with_extension("ready.json");
        let _ = std::fs::remove_file(&ready_file);
        let ready_path = ready_file.to_str().expect("utf-8 path").to_string();
        let any = "127.0.0.1:0";
        let positions = positions.to_string();
        let mut args = vec![
            "demo",
            "--data-dir",
            data_dir.to_str().expect("utf-8 path"),
            "--positions",
            &positions,
            "--admin",
            any,
            "--station",
            any,
            "--api",
            any,
            "--ready-file",
            &ready_path,
        ];
        args.extend_from_slice(more);
        Daemon::spawn(&args, None, Some(ready_file), data_dir, wrapper)
    }

    /// `mpayd run --config FILE`, learning where it listens from its ready file (for
    /// configurations that let it pick free ports, such as the demo's `mpayd.toml`).
    pub fn run_config(config: &Path, data_dir: &Path) -> Daemon {
        Daemon::run_config_under(&[], config, data_dir)
    }

    /// `run_config` under `wrapper` (a program and its arguments, e.g. prlimit).
    pub fn run_config_under(wrapper: &[&str], config: &Path, data_dir: &Path) -> Daemon {
        let ready_file = data_dir.with_extension("ready.json");
        let _ = std::fs::remove_file(&ready_file);
        let ready_path = ready_file.to_str().expect("utf-8 path").to_string();
        Daemon::spawn(
            &[
                "run",
                "--config",
                config.to_str().expect("utf-8 path"),
                "--ready-file",
                &ready_path,
            ],
            None,
            Some(ready_file),
            data_dir,
            wrapper,
        )
    }

    /// `mpayd run --config FILE`, where the file's listeners are `admin` and `station`.
    pub fn run(config: &Path, admin: SocketAddr, station: SocketAddr, data_dir: &Path) -> Daemon {
        Daemon::spawn(
            &[
                "run",
                "--config",
                config.to_str().expect("utf-8 path"),
                "--init",
            ],
            Some((admin, station)),
            None,
            data_dir,
            &[],
        )
    }

    fn spawn(
        args: &[&str],
        known: Option<(SocketAddr, SocketAddr)>,
        ready_file: Option<PathBuf>,
        data_dir: &Path,
        wrapper: &[&str],
    ) -> Daemon {
        std::fs::create_dir_all(data_dir).expect("data dir");
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = data_dir.with_extension(format!("{n}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let bin = mpayd_bin();
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut c = Command::new(program);
                c.args(wrapper_args).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = command
            .args(args)
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("start mpayd");
        let unknown: SocketAddr = "0.0.0.0:0".parse().expect("addr");
        let (admin, station) = known.unwrap_or((unknown, unknown));
        Daemon {
            child,
            admin,
            station,
            api: None,
            console: None,
            remote_console: None,
            ready_file,
            data_dir: data_dir.to_path_buf(),
            log,
            wrapped: !wrapper.is_empty(),
        }
    }

    /// The mpayd process: the child, or the wrapper's child.
    pub fn pid(&self) -> u32 {
        let own = self.child.id();
        if !self.wrapped {
            return own;
        }
        std::fs::read_to_string(format!("/proc/{own}/task/{own}/children"))
            .ok()
            .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()))
            .unwrap_or(own)
    }

    /// Waits until /healthz answers 200; panics with the log if the daemon dies or takes too long.
    pub fn ready(mut self) -> Daemon {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(file) = &self.ready_file
                && let Ok(text) = std::fs::read_to_string(file)
                && let Ok(ready) = serde_json::from_str::<serde_json::Value>(&text)
            {
                let addr = |k: &str| ready[k].as_str().and_then(|a| a.parse().ok());
                if let (Some(admin), Some(station)) = (addr("admin"), addr("station")) {
                    self.admin = admin;
                    self.station = station;
                    self.api = addr("api");
                    self.console = ready["console"].as_str().map(PathBuf::from);
                    self.remote_console = addr("remote_console");
                    self.ready_file = None;
                }
            }
            if self.ready_file.is_none()
                && let Ok((200, _)) = http_get(self.admin, "/healthz")
            {
                return self;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mpayd exited with {status}:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "mpayd not ready:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// POSTs a SOAP request to the station as the node does; returns the response body.
    pub fn soap(&self, action: &str, body: &str) -> String {
        let quoted = format!("\"{action}\"");
        let (status, response) = http_post(
            self.station,
            STATION_PATH,
            &[
                ("SOAPAction", &quoted),
                ("Content-Type", "text/xml; charset=utf-8"),
            ],
            body.as_bytes(),
        )
        .expect("station answers");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&response));
        String::from_utf8(response).expect("utf-8 response")
    }

    /// The admin listener's notice list: `all` includes notices that are not payable.
    pub fn notices(&self, all: bool) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut from = 0u64;
        loop {
            let path = format!("/notices?from={from}&limit=5000&all={all}");
            let (status, body) = http_get(self.admin, &path).expect("notices");
            assert_eq!(status, 200);
            let page: serde_json::Value = serde_json::from_slice(&body).expect("json");
            out.extend(page["notices"].as_array().cloned().unwrap_or_default());
            match page["next"].as_u64() {
                Some(next) => from = next,
                None => return out,
            }
        }
    }

    /// Calls the REST API with an entity's key (`None`: no key); returns the status and the
    /// JSON answer (`Null` if the body is not JSON).
    pub fn api_call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let addr = self
            .api
            .expect("this daemon's API address is known (Daemon::demo)");
        let bearer = key.map(|k| format!("Bearer {k}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(b) = &bearer {
            headers.push(("Authorization", b.as_str()));
        }
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let (status, response) =
            http_request(addr, method, path, &headers, &bytes).expect("api answers");
        let json = serde_json::from_slice(&response).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// Uploads a bulk file for `entity` with `key`; returns the job the daemon answered (202).
    pub fn bulk_upload(&self, entity: &str, key: &str, file: &[u8]) -> serde_json::Value {
        let addr = self.api.expect("this daemon's API address is known");
        let (status, body) = http_request(
            addr,
            "POST",
            &format!("/api/v1/entities/{entity}/bulk"),
            &[
                ("Authorization", &format!("Bearer {key}")),
                ("Content-Type", "text/csv"),
            ],
            file,
        )
        .expect("upload");
        assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("job json")
    }

    /// Polls a bulk job until it is done; returns it.
    pub fn bulk_finished(
        &self,
        entity: &str,
        key: &str,
        job: &serde_json::Value,
    ) -> serde_json::Value {
        let path = format!("/api/v1/entities/{entity}/bulk/{}", job["id"]);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, j) = self.api_call("GET", &path, Some(key), None);
            assert_eq!(status, 200, "{j}");
            if j["status"] == "done" {
                return j;
            }
            assert!(Instant::now() < deadline, "job not done: {j}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn health(&self) -> serde_json::Value {
        let (status, body) = http_get(self.admin, "/healthz").expect("healthz");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("healthz json")
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait(Duration::from_secs(30))
    }

    /// Stops a demo daemon, changes its `mpayd.toml` with `edit`, and runs it again on it.
    pub fn reconfigured(self, edit: impl Fn(&str) -> String) -> Daemon {
        self.reconfigured_under(&[], edit)
    }

    /// `reconfigured`, the new daemon run by `wrapper` (e.g. prlimit).
    pub fn reconfigured_under(self, wrapper: &[&str], edit: impl Fn(&str) -> String) -> Daemon {
        let data = self.data_dir.clone();
        assert!(self.stop().success(), "the daemon stopped cleanly");
        let config = data.join("mpayd.toml");
        let text = std::fs::read_to_string(&config).expect("config");
        let changed = edit(&text);
        assert_ne!(changed, text, "the edit changed nothing");
        std::fs::write(&config, changed).expect("write config");
        Daemon::run_config_under(wrapper, &config, &data).ready()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(mut self) -> ExitStatus {
        self.signal("KILL");
        self.wait(Duration::from_secs(10))
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "mpayd did not exit:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.wrapped {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid().to_string()])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
