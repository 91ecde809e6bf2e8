//! Storage emulators on loopback: moto (S3), a GCS XML-API front over moto, Azurite, and a
//! counting HTTP proxy.

use std::fs::{self};
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::*;

// ------------------------------------------------------------------ moto (S3)

/// SigV4-shaped Authorization header; moto does not verify signatures.
pub const FAKE_SIGV4: &str = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, \
                              SignedHeaders=host, Signature=00";

/// moto S3 server (`python3 -m moto.server`), in-memory, us-east-1. Use
/// access key `test` / secret `test` and `aws_allow_http=true` against it.
pub struct Moto {
    svc: Service,
    port: u16,
    dir: TempDir,
}

impl Moto {
    pub fn start() -> Moto {
        let dir = tempfile::Builder::new()
            .prefix("moto-")
            .tempdir()
            .expect("tempdir");
        let log = dir.path().join("moto.log");
        let (svc, port) = start_listener("moto", &log, "moto[server]", |port| {
            let mut cmd = Command::new("python3");
            cmd.args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ]);
            cmd
        });
        Moto { svc, port, dir }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a bucket (unsigned PUT /name, region us-east-1). Panics unless 200.
    pub fn create_bucket(&self, name: &str) {
        let r = http("PUT", &format!("{}/{}", self.endpoint(), name), &[], b"");
        if r.status != 200 {
            panic!(
                "moto: create bucket {name}: HTTP {}: {}\n{}",
                r.status,
                r.text(),
                self.svc.log_tail(20)
            );
        }
    }

    /// All keys in a bucket under `prefix` (ListObjectsV2, follows continuation).
    pub fn list_keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/{}?list-type=2&prefix={}",
                self.endpoint(),
                bucket,
                url_encode_key(prefix).replace('/', "%2F")
            );
            if let Some(t) = &token {
                url.push_str(&format!(
                    "&continuation-token={}",
                    url_encode_key(t).replace('/', "%2F")
                ));
            }
            let r = http("GET", &url, &[("Authorization", FAKE_SIGV4)], b"");
            assert_eq!(r.status, 200, "moto list {bucket}: {}", r.text());
            let xml = r.text();
            keys.extend(xml_values(&xml, "Key"));
            token = xml_values(&xml, "NextContinuationToken").into_iter().next();
            if token.is_none() {
                return keys;
            }
        }
    }

    /// An object's bytes, or None when it does not exist.
    pub fn get_object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let r = http(
            "GET",
            &format!("{}/{}/{}", self.endpoint(), bucket, url_encode_key(key)),
            &[("Authorization", FAKE_SIGV4)],
            b"",
        );
        match r.status {
            200 => Some(r.body),
            404 => None,
            s => panic!("moto get {bucket}/{key}: HTTP {s}: {}", r.text()),
        }
    }

    /// Writes an object directly (e.g. to corrupt an artifact in a test).
    pub fn put_object(&self, bucket: &str, key: &str, data: &[u8]) {
        let r = http(
            "PUT",
            &format!("{}/{}/{}", self.endpoint(), bucket, url_encode_key(key)),
            &[
                ("Authorization", FAKE_SIGV4),
                ("Content-Type", "application/octet-stream"),
            ],
            data,
        );
        assert_eq!(r.status, 200, "moto put {bucket}/{key}: {}", r.text());
    }

    /// Deletes an object directly.
    pub fn delete_object(&self, bucket: &str, key: &str) {
        let r = http(
            "DELETE",
            &format!("{}/{}/{}", self.endpoint(), bucket, url_encode_key(key)),
            &[("Authorization", FAKE_SIGV4)],
            b"",
        );
        assert!(
            r.status == 204 || r.status == 200,
            "moto delete {bucket}/{key}: {}",
            r.text()
        );
    }
}

/// `log_tail` and `kill` of helpers that run as one [`Service`] in their `svc` field.
macro_rules! service_controls {
    ($($helper:ty),+) => {$(
        impl $helper {
            pub fn log_tail(&self, lines: usize) -> String {
                self.svc.log_tail(lines)
            }

            pub fn kill(&mut self) {
                self.svc.kill();
            }
        }
    )+};
}

service_controls!(Moto, GcsFront, Azurite, CountingProxy, FaultProxy);

// ------------------------------------------------------------------ GCS front

/// GCS XML-API front (tests/support/gcs_front.py) over a [`Moto`]. A GCS bucket
/// is a moto bucket. Point object_store at it with a service-account JSON
/// (see [`GcsFront::write_service_account`]) and `allow_http=true`.
/// Starts `tests/support/<name>.py` as a loopback front of `moto` (`--port`, `--upstream`,
/// `--log <dir>/requests.log`), in a directory of its own.
fn start_front(name: &str, moto: &Moto) -> (Service, u16, TempDir) {
    start_front_with(name, moto, &[])
}

fn start_front_with(
    name: &str,
    moto: &Moto,
    extra: &[&std::ffi::OsStr],
) -> (Service, u16, TempDir) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("{}-", name.replace('_', "-")))
        .tempdir()
        .expect("tempdir");
    let req_log = dir.path().join("requests.log");
    let upstream = moto.endpoint();
    let script = support_script(&format!("{name}.py"));
    let (svc, port) = start_script(name, dir.path(), &format!("{name}.log"), |port| {
        let mut c = Command::new("python3");
        c.arg(&script)
            .arg("--port")
            .arg(port.to_string())
            .arg("--upstream")
            .arg(&upstream)
            .arg("--log")
            .arg(&req_log)
            .args(extra);
        c
    });
    (svc, port, dir)
}

pub struct GcsFront {
    svc: Service,
    port: u16,
    dir: TempDir,
}

impl GcsFront {
    pub fn start(moto: &Moto) -> GcsFront {
        let (svc, port, dir) = start_front("gcs_front", moto);
        GcsFront { svc, port, dir }
    }

    /// `http://127.0.0.1:PORT` (object_store's `google_base_url` / `gcs_base_url`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket through the front (same as on moto).
    pub fn create_bucket(&self, name: &str) {
        let r = http("PUT", &format!("{}/{}", self.endpoint(), name), &[], b"");
        assert_eq!(
            r.status,
            200,
            "gcs_front: create bucket {name}: {}",
            r.text()
        );
    }

    /// Writes a service-account JSON with `disable_oauth: true` and
    /// `gcs_base_url` = this front, and returns its path
    /// (for `google_service_account` / `service_account_path`).
    pub fn write_service_account(&self, path: &Path) -> PathBuf {
        write_gcs_service_account(path, &self.endpoint());
        path.to_path_buf()
    }

    /// Requests seen so far, one `METHOD /path?query` line each.
    pub fn requests(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("requests.log"))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

/// Writes a GCS service-account JSON with `disable_oauth: true` and `gcs_base_url`.
pub fn write_gcs_service_account(path: &Path, gcs_base_url: &str) {
    let json = serde_json::json!({
        "type": "service_account",
        "private_key": "unused",
        "private_key_id": "unused",
        "client_email": "test@example.invalid",
        "disable_oauth": true,
        "gcs_base_url": gcs_base_url,
    });
    fs::write(path, serde_json::to_vec_pretty(&json).unwrap()).expect("write service account");
}

// ------------------------------------------------------------------ Azurite

/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Azurite blob service (`azurite-blob`), data in a TempDir.
pub struct Azurite {
    svc: Service,
    port: u16,
    dir: TempDir,
}

impl Azurite {
    pub fn start() -> Azurite {
        let dir = tempfile::Builder::new()
            .prefix("azurite-")
            .tempdir()
            .expect("tempdir");
        let log = dir.path().join("azurite.log");
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        let (svc, port) = start_listener("azurite", &log, "azurite", |port| {
            let mut cmd = Command::new("azurite-blob");
            cmd.arg("--blobHost")
                .arg("127.0.0.1")
                .arg("--blobPort")
                .arg(port.to_string())
                .arg("--location")
                .arg(&data)
                .args(["--silent", "--skipApiVersionCheck", "--loose"]);
            cmd
        });
        Azurite { svc, port, dir }
    }

    /// `http://127.0.0.1:PORT/devstoreaccount1` (AZURITE_BLOB_STORAGE_URL /
    /// azure_storage_endpoint).
    pub fn blob_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, AZURITE_ACCOUNT)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection string for azure-storage-blob and friends.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint={};",
            self.blob_endpoint()
        )
    }

    /// Runs a Python snippet with `svc` = BlobServiceClient for this Azurite and
    /// `args` = the extra arguments; returns stdout. Panics with the traceback.
    pub fn python(&self, snippet: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let prog = format!(
            "import sys\nfrom azure.storage.blob import BlobServiceClient\n\
             svc = BlobServiceClient.from_connection_string(sys.argv[1])\nargs = sys.argv[2:]\n{snippet}\n"
        );
        let mut c = Command::new("python3");
        c.arg("-c")
            .arg(prog)
            .arg(self.connection_string())
            .args(args);
        let out = run_with_stdin(&mut c, stdin);
        if !out.status.success() {
            panic!(
                "azurite python snippet failed\n{}\n--- azurite log ---\n{}",
                describe_output(&out),
                self.svc.log_tail(20)
            );
        }
        out.stdout
    }

    /// Creates a container (object_store needs it to exist).
    pub fn create_container(&self, name: &str) {
        self.python("svc.create_container(args[0])", &[name], b"");
    }

    /// Blob names in a container under `prefix`.
    pub fn list_blobs(&self, container: &str, prefix: &str) -> Vec<String> {
        let out = self.python(
            "for b in svc.get_container_client(args[0]).list_blobs(name_starts_with=args[1]):\n    print(b.name)",
            &[container, prefix],
            b"",
        );
        String::from_utf8_lossy(&out)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// A blob's bytes, or None when it does not exist.
    pub fn download(&self, container: &str, blob: &str) -> Option<Vec<u8>> {
        let out = self.python(
            "from azure.core.exceptions import ResourceNotFoundError\n\
             try:\n    d = svc.get_blob_client(args[0], args[1]).download_blob().readall()\n\
             except ResourceNotFoundError:\n    sys.stdout.write('MISSING'); sys.exit(0)\n\
             sys.stdout.buffer.write(b'FOUND' + d)",
            &[container, blob],
            b"",
        );
        if out.starts_with(b"FOUND") {
            Some(out[5..].to_vec())
        } else {
            None
        }
    }

    /// Uploads (overwrites) a blob directly.
    pub fn upload(&self, container: &str, blob: &str, data: &[u8]) {
        self.python(
            "svc.get_blob_client(args[0], args[1]).upload_blob(sys.stdin.buffer.read(), overwrite=True)",
            &[container, blob],
            data,
        );
    }
}

// ------------------------------------------------------------------ counting proxy

/// Loopback forward proxy (tests/support/counting_proxy.py) that logs one line
/// per request (`CONNECT host:port` or `METHOD http://...`) and refuses
/// non-loopback targets. Use its url() as HTTP_PROXY / HTTPS_PROXY.
pub struct CountingProxy {
    svc: Service,
    port: u16,
    log: PathBuf,
    dir: TempDir,
}

impl CountingProxy {
    pub fn start() -> CountingProxy {
        let dir = tempfile::Builder::new()
            .prefix("proxy-")
            .tempdir()
            .expect("tempdir");
        let log = dir.path().join("requests.log");
        let (svc, port) = start_script("counting_proxy", dir.path(), "proxy.log", |port| {
            let mut c = Command::new("python3");
            c.arg(support_script("counting_proxy.py"))
                .arg("--port")
                .arg(port.to_string())
                .arg("--log")
                .arg(&log);
            c
        });
        CountingProxy {
            svc,
            port,
            log,
            dir,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Logged requests so far, in order.
    pub fn lines(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

// ------------------------------------------------------------------ fault-injecting front

/// Loopback reverse proxy (tests/support/fault_proxy.py) in front of a [`Moto`]: a seeded
/// share of requests gets a 500, a 503, a connection reset (before forwarding, or after
/// the request landed upstream), a truncated answer or a delay. Point a target's
/// `aws_endpoint` at [`FaultProxy::endpoint`]. It starts with no faults.
pub struct FaultProxy {
    svc: Service,
    port: u16,
    dir: TempDir,
    tls: bool,
}

/// Every fault kind fault_proxy.py knows.
pub const FAULT_KINDS: &[&str] = &["500", "503", "reset", "lost", "truncate", "delay"];

impl FaultProxy {
    pub fn start(moto: &Moto) -> FaultProxy {
        let (svc, port, dir) = start_front("fault_proxy", moto);
        FaultProxy {
            svc,
            port,
            dir,
            tls: false,
        }
    }

    /// The same front serving HTTPS with `tls`'s server certificate (SAN 127.0.0.1),
    /// signed by a throwaway CA no system trusts: a store behind an internal CA.
    pub fn start_tls(moto: &Moto, tls: &TlsFiles) -> FaultProxy {
        let (svc, port, dir) = start_front_with(
            "fault_proxy",
            moto,
            &[
                "--tls-cert".as_ref(),
                tls.server_cert.as_os_str(),
                "--tls-key".as_ref(),
                tls.server_key.as_os_str(),
            ],
        );
        FaultProxy {
            svc,
            port,
            dir,
            tls: true,
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` when started with TLS)
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// New settings: from now on a share `rate` of requests gets one of `kinds`, drawn
    /// from `seed`; the counters start again from zero.
    pub fn set(&self, seed: u64, rate: f64, kinds: &[&str]) {
        self.configure(serde_json::json!({ "seed": seed, "rate": rate, "kinds": kinds }));
    }

    /// Like [`FaultProxy::set`], for the requests whose `METHOD path?query` contains every
    /// text in `only`.
    pub fn set_only(&self, only: &[&str], seed: u64, rate: f64, kinds: &[&str]) {
        self.configure(
            serde_json::json!({ "seed": seed, "rate": rate, "kinds": kinds, "only": only }),
        );
    }

    /// Every request whose `METHOD path?query` contains each text in `only` waits `ms`
    /// milliseconds before it is forwarded (a slow store).
    pub fn configure_delays(&self, only: &[&str], ms: u64) {
        self.configure(serde_json::json!({
            "seed": 0, "rate": 1.0, "kinds": ["delay"], "only": only, "delay_ms": [ms, ms]
        }));
    }

    fn configure(&self, body: serde_json::Value) {
        let r = http(
            "POST",
            &format!("{}/__faults__", self.endpoint()),
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "fault_proxy control: {}", r.text());
    }

    /// Requests and injected faults since the last [`FaultProxy::set`]:
    /// `{"requests": n, "injected": {"500": n, ...}}`.
    pub fn counters(&self) -> serde_json::Value {
        let r = http("GET", &format!("{}/__faults__", self.endpoint()), &[], b"");
        assert_eq!(r.status, 200, "fault_proxy control: {}", r.text());
        serde_json::from_slice(&r.body).expect("fault_proxy counters JSON")
    }

    /// Every line of the per-request log so far (`<fault or ok> METHOD /path`), each
    /// written when the request arrives (before a delay).
    pub fn requests(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("requests.log"))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// The last lines of the per-request log (`<fault or ok> METHOD /path`).
    pub fn requests_tail(&self, lines: usize) -> String {
        tail(&self.dir.path().join("requests.log"), lines)
    }
}
