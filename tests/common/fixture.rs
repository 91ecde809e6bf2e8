//! A backup fixture: two age keys, sample static pod resources, config writing, and
//! target YAML for every backend.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Azurite, EtcdServer, GcsFront, Moto, TlsFiles, age_keygen, tool};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub snapshot_key: PathBuf,
    pub snapshot_recipient: String,
    pub static_key: PathBuf,
    pub static_recipient: String,
    /// `base_dir` of the static resources (plays /etc/kubernetes).
    pub base_dir: PathBuf,
    /// The one configured static resources directory.
    pub static_dir: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let (snapshot_key, snapshot_recipient) = age_keygen(dir.path(), "snapshot");
        let (static_key, static_recipient) = age_keygen(dir.path(), "static");
        let base_dir = dir.path().join("kubernetes");
        let static_dir = base_dir.join("static-pod-resources/kube-apiserver-pod-7");
        std::fs::create_dir_all(static_dir.join("secrets")).unwrap();
        std::fs::create_dir_all(static_dir.join("configmaps/config")).unwrap();
        std::fs::write(
            static_dir.join("secrets/encryption-config"),
            "kind: EncryptionConfiguration\nkeys: [secret-aescbc-key]\n",
        )
        .unwrap();
        std::fs::write(
            static_dir.join("configmaps/config/config.yaml"),
            "apiVersion: v1\n",
        )
        .unwrap();
        Fixture {
            dir,
            snapshot_key,
            snapshot_recipient,
            static_key,
            static_recipient,
            base_dir,
            static_dir,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `source:` YAML for a live etcd (TLS files when the server has TLS) plus static resources.
    pub fn etcd_source(&self, endpoints: &[String], tls: Option<&TlsFiles>) -> String {
        let list = endpoints
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let tls = tls.map_or(String::new(), |t| {
            format!(
                "    cacert: {}\n    cert: {}\n    key: {}\n",
                t.ca.display(),
                t.client_cert.display(),
                t.client_key.display()
            )
        });
        format!(
            "source:\n  etcd:\n    endpoints: [{list}]\n    timeout: 5s\n{tls}  static_resources:\n    base_dir: {}\n    paths: [\"{}\"]\n",
            self.base_dir.display(),
            self.static_dir.display()
        )
    }

    /// `source:` YAML for one etcd server.
    pub fn etcd_source_for(&self, etcd: &EtcdServer) -> String {
        self.etcd_source(&[etcd.endpoint()], etcd.tls())
    }

    /// Writes a full config (cluster `test`, both recipients) and returns its path.
    /// `targets` is the YAML body under `targets:`; `extra` is appended at top level.
    pub fn write_config(&self, name: &str, source: &str, targets: &str, extra: &str) -> PathBuf {
        let has_static = source.contains("static_resources") || source.contains("backup_dir");
        let static_enc = if has_static {
            format!(
                "  static_resources:\n    recipients: [\"{}\"]\n",
                self.static_recipient
            )
        } else {
            String::new()
        };
        let text = format!(
            "version: 1\ncluster: test\n{source}encryption:\n  snapshot:\n    recipients: [\"{}\"]\n{static_enc}targets:\n{targets}{extra}",
            self.snapshot_recipient
        );
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The tool with `ETCD_OFFSITE_CONFIG` pointing at `config`.
    pub fn cmd(&self, config: &Path) -> Command {
        let mut cmd = tool();
        cmd.env("ETCD_OFFSITE_CONFIG", config);
        cmd
    }

    /// A new local directory and its file:// URL.
    pub fn file_url(&self, name: &str) -> (PathBuf, String) {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("file://{}", dir.display());
        (dir, url)
    }

    /// A config backing up `etcd` into a new `backups` directory; returns (that directory, config path).
    pub fn dir_config(&self, etcd: &EtcdServer, extra: &str) -> (PathBuf, PathBuf) {
        let (dir, url) = self.file_url("backups");
        let config = self.write_config(
            "config.yaml",
            &self.etcd_source_for(etcd),
            &format!("  snapshot: {{ url: \"{url}\" }}\n"),
            extra,
        );
        (dir, config)
    }

    /// `tar czf SRC/static_kuberesources_<ts>.tar.gz -C <base_dir> MEMBER`, as
    /// `cluster-backup.sh` writes it.
    pub fn tar_static(&self, src: &Path, ts: &str, member: &str) {
        super::run_ok(
            Command::new("tar")
                .arg("czf")
                .arg(src.join(format!("static_kuberesources_{ts}.tar.gz")))
                .arg("-C")
                .arg(&self.base_dir)
                .arg(member),
        );
    }

    /// Both identity files as `--identity` arguments.
    pub fn identity_args(&self) -> Vec<String> {
        vec![
            "--identity".into(),
            self.snapshot_key.display().to_string(),
            "--identity".into(),
            self.static_key.display().to_string(),
        ]
    }
}

/// Target YAML (a flow mapping) for an S3 bucket on moto.
pub fn s3_target(moto: &Moto, bucket: &str, prefix: &str) -> String {
    s3_target_at(&moto.endpoint(), bucket, prefix)
}

/// Target YAML for an S3 bucket served at `endpoint` (moto, or a front before it).
pub fn s3_target_at(endpoint: &str, bucket: &str, prefix: &str) -> String {
    format!(
        "{{ url: \"s3://{bucket}/{prefix}\", options: {{ aws_endpoint: \"{endpoint}\", aws_allow_http: \"true\", aws_region: us-east-1, aws_access_key_id: test, aws_secret_access_key: test, aws_virtual_hosted_style_request: \"false\" }} }}"
    )
}

/// Target YAML for an Azure container on Azurite.
pub fn azure_target(azurite: &Azurite, container: &str, prefix: &str) -> String {
    format!(
        "{{ url: \"az://{container}/{prefix}\", options: {{ azure_storage_account_name: {}, azure_storage_account_key: \"{}\", azure_storage_endpoint: \"{}\", azure_allow_http: \"true\" }} }}",
        super::AZURITE_ACCOUNT,
        super::AZURITE_KEY,
        azurite.blob_endpoint()
    )
}

/// Target YAML for a GCS bucket behind the loopback XML-API front (service account written into `dir`).
pub fn gcs_target(front: &GcsFront, dir: &Path, bucket: &str, prefix: &str) -> String {
    let sa = front.write_service_account(&dir.join(format!("gcs-{bucket}.json")));
    format!(
        "{{ url: \"gs://{bucket}/{prefix}\", options: {{ google_service_account: \"{}\", allow_http: \"true\" }} }}",
        sa.display()
    )
}
