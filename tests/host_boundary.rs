mod common;

// Issue 18: at the host boundary. Reads bounded by the manifest (a zstd bomb in place of a
// signed backup's snapshot), no file:// write through a link, no crash on a closed pipe,
// and schedules that never fire refused.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::fixture::Fixture;
use common::*;

/// A fixture backing up `etcd` into a file:// target, its manifests signed.
struct Setup {
    fx: Fixture,
    target: PathBuf,
    config: PathBuf,
}

impl Setup {
    fn new(etcd: &EtcdServer) -> Setup {
        let fx = Fixture::new();
        let (key, public) = ssh_keypair(fx.dir.path(), "signer");
        let allowed = fx.path("allowed_signers");
        std::fs::write(&allowed, format!("backups@test {public}\n")).unwrap();
        let signing = format!(
            "signing: {{ key: {}, allowed_signers: {} }}\n",
            key.display(),
            allowed.display()
        );
        let (target, config) = fx.dir_config(etcd, &signing);
        Setup { fx, target, config }
    }

    fn cmd(&self) -> Command {
        self.fx.cmd(&self.config)
    }

    fn backup(&self) -> String {
        last_line(&run_ok(self.cmd().args(["backup", "--no-prune"])))
    }

    fn complete(&self) -> Vec<String> {
        complete_ids(&list_json(&self.fx, &self.config))
    }

    fn manifest(&self, id: &str) -> serde_json::Value {
        let path = self.target.join("test").join(id).join("manifest.json");
        serde_json::from_slice(&read(&path)).unwrap()
    }
}

/// Waits for `child` (at most two minutes), reading its stderr when piped; the largest total
/// size of the files below `watch` seen meanwhile comes back with the output.
fn wait_watching(mut child: std::process::Child, watch: &Path) -> (Output, u64) {
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = std::io::Read::read_to_end(&mut pipe, &mut bytes);
            bytes
        })
    });
    let started = Instant::now();
    let mut most = 0;
    let status = loop {
        let now: u64 = files_below(watch)
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        most = most.max(now);
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("still running after two minutes");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stderr = stderr.map_or_else(Vec::new, |t| t.join().unwrap());
    (
        Output {
            status,
            stdout: Vec::new(),
            stderr,
        },
        most,
    )
}

/// `head -c SIZE /dev/zero | zstd`: a few kilobytes that decompress to `size` bytes.
fn zstd_bomb(size: u64) -> Vec<u8> {
    let out = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg("head -c \"$1\" /dev/zero | zstd -q -c")
            .arg("sh")
            .arg(size.to_string()),
    );
    out.stdout
}

/// `age -r RECIPIENT` of `plaintext`.
fn age_encrypt(plaintext: &[u8], recipient: &str) -> Vec<u8> {
    run_with_stdin(Command::new("age").args(["-r", recipient]), plaintext).stdout
}

/// A zstd skippable frame of `len` bytes in all (at least 8): decoders pass over it.
fn skippable_frame(len: usize) -> Vec<u8> {
    assert!(len >= 8);
    let mut frame = 0x184D_2A50u32.to_le_bytes().to_vec();
    frame.extend_from_slice(&((len - 8) as u32).to_le_bytes());
    frame.resize(len, 0);
    frame
}

/// A zstd bomb encrypted to `recipient` whose stored size is exactly `size`: the bomb,
/// padded with a skippable frame until age's output has that length.
fn bomb_of_size(bomb: &[u8], recipient: &str, size: usize) -> Vec<u8> {
    let mut padding = size - age_encrypt(bomb, recipient).len();
    for _ in 0..8 {
        let mut payload = bomb.to_vec();
        payload.extend(skippable_frame(padding));
        let sealed = age_encrypt(&payload, recipient);
        if sealed.len() == size {
            return sealed;
        }
        // age adds 16 bytes per 64 KiB chunk: take the difference off and try again.
        padding = (padding as i64 + size as i64 - sealed.len() as i64) as usize;
    }
    panic!("could not pad the bomb to {size} bytes");
}

/// A signed backup whose snapshot object is replaced by a zstd bomb encrypted to the
/// snapshot recipient (once smaller than recorded, once padded to the recorded stored size
/// so only the decoded stream tells): restore, drill and deep verify exit 3 naming the
/// artifact, never more than the recorded plaintext in `--to` or the scratch directory, and
/// nothing left behind.
#[test]
fn a_zstd_bomb_in_place_of_a_signed_snapshot_is_stopped_at_the_recorded_size() {
    let etcd = EtcdServer::start(false);
    etcd.load(400, 1000);
    let s = Setup::new(&etcd);
    let id = s.backup();
    let manifest = s.manifest(&id);
    let plaintext = manifest["artifacts"]["snapshot"]["plaintext"]["size"]
        .as_u64()
        .unwrap();
    let stored = manifest["artifacts"]["snapshot"]["stored"]["size"]
        .as_u64()
        .unwrap();
    let object = s.target.join("test").join(&id).join("snapshot.db.zst.age");
    let original = read(&object);
    let key = format!("test/{id}/snapshot.db.zst.age");
    // 256 MiB of zeros, a few KiB compressed: far more than the recorded plaintext.
    let bomb = zstd_bomb(256 << 20);
    assert!(plaintext < 256 << 20 && (bomb.len() as u64) < stored);
    let small = age_encrypt(&bomb, &s.fx.snapshot_recipient);
    let same_size = bomb_of_size(&bomb, &s.fx.snapshot_recipient, stored as usize);
    for (what, sealed, says) in [
        ("a smaller bomb", &small, "stored size is"),
        (
            "a bomb of the recorded stored size",
            &same_size,
            "snapshot.db.zst.age",
        ),
    ] {
        std::fs::write(&object, sealed).unwrap();
        let to = s.fx.path("restore");
        let child = s
            .cmd()
            .args(["restore", &id, "--to"])
            .arg(&to)
            .args(s.fx.identity_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (out, most) = wait_watching(child, &to);
        assert_eq!(
            exit_code(&out),
            3,
            "restore of {what}\n{}",
            describe_output(&out)
        );
        let err = stderr_str(&out);
        assert!(
            err.contains(&key) && err.contains(says),
            "restore of {what}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            most <= plaintext,
            "restore of {what}: {most} bytes in --to, the manifest records {plaintext}"
        );
        assert!(
            files_below(&to).is_empty(),
            "restore of {what} left {:?}",
            files_below(&to)
        );

        let scratch = s.fx.path("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let child = s
            .cmd()
            .args(["drill", &id, "--scratch-dir"])
            .arg(&scratch)
            .args(s.fx.identity_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (out, most) = wait_watching(child, &scratch);
        assert_eq!(
            exit_code(&out),
            3,
            "drill of {what}\n{}",
            describe_output(&out)
        );
        assert!(
            most <= plaintext,
            "drill of {what}: {most} bytes in the scratch directory"
        );
        assert_eq!(
            std::fs::read_dir(&scratch).unwrap().count(),
            0,
            "drill of {what}"
        );

        let out = run(s.cmd().args(["verify", &id]).args(s.fx.identity_args()));
        assert_eq!(
            exit_code(&out),
            3,
            "verify of {what}\n{}",
            describe_output(&out)
        );
        assert!(
            stdout_str(&out).contains(&format!("{id} FAILED")),
            "{}",
            describe_output(&out)
        );
    }
    // The same object back in place restores: the bounds are the recorded sizes, not less.
    std::fs::write(&object, original).unwrap();
    let to = s.fx.path("restore-good");
    run_ok(
        s.cmd()
            .args(["restore", &id, "--to"])
            .arg(&to)
            .args(s.fx.identity_args()),
    );
    assert_eq!(files_below(&to).len(), 2);
}

/// `<target>/<cluster>` a link to a directory outside the target: the backup fails naming
/// the link and saying to replace it, and nothing is written outside (no lock, no
/// in-progress record, no artifact, no manifest).
#[test]
fn a_cluster_directory_linked_out_of_a_file_target_gets_no_writes() {
    let etcd = EtcdServer::start(false);
    etcd.load(50, 100);
    let s = Setup::new(&etcd);
    let outside = s.fx.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, s.target.join("test")).unwrap();
    let out = run(s.cmd().args(["backup", "--no-prune"]));
    assert_eq!(exit_code(&out), 1, "{}", describe_output(&out));
    let err = stderr_str(&out);
    assert!(
        err.contains("is a symbolic link") && err.contains("real directory"),
        "{err}"
    );
    assert!(
        err.contains(&s.target.join("test").display().to_string()),
        "{err}"
    );
    assert!(
        files_below(&outside).is_empty(),
        "written outside: {:?}",
        files_below(&outside)
    );
    // With the link replaced by a real directory the backup runs.
    std::fs::remove_file(s.target.join("test")).unwrap();
    let id = s.backup();
    assert_eq!(s.complete(), [id]);
}

/// The tool's output into pipes and streams that are closed: `backup 2>&1 | head -1` (the
/// reader takes one line and leaves), `backup | true` (the reader is gone before the
/// first line), a closed stdout (`>&-`) and a stderr pipe nobody reads. Each backup commits
/// and exits 0, says nothing of a panic, and leaves no lock: the next one runs at once.
#[test]
fn closed_pipes_and_streams_never_crash_a_backup() {
    let etcd = EtcdServer::start(false);
    etcd.load(100, 200);
    let s = Setup::new(&etcd);
    let started = Instant::now();

    // `2>&1 | head -1`
    let (reader, writer) = std::io::pipe().unwrap();
    let child = {
        let mut cmd = s.cmd();
        cmd.args(["backup", "--no-prune"])
            .stdin(Stdio::null())
            .stdout(writer.try_clone().unwrap())
            .stderr(writer);
        cmd.spawn().unwrap()
    };
    let mut first = String::new();
    BufReader::new(reader).read_line(&mut first).unwrap();
    assert!(!first.is_empty());
    let out = wait_within(child, Duration::from_secs(60), "backup 2>&1 | head -1");
    assert_eq!(
        exit_code(&out),
        0,
        "backup 2>&1 | head -1 (first line {first:?})"
    );
    assert_eq!(s.complete().len(), 1);

    // `| true`, stderr kept
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = run(s.cmd().args(["backup", "--no-prune"]).stdout(writer));
    assert_eq!(
        exit_code(&out),
        0,
        "backup | true\n{}",
        describe_output(&out)
    );
    let err = stderr_str(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("standard output is closed"), "{err}");
    assert_eq!(s.complete().len(), 2);

    // `>&-`
    let out = run(Command::new("sh")
        .arg("-c")
        .arg("exec \"$0\" backup --no-prune >&-")
        .arg(env!("CARGO_BIN_EXE_etcd-offsite"))
        .env("ETCD_OFFSITE_CONFIG", &s.config));
    assert_eq!(exit_code(&out), 0, "backup >&-\n{}", describe_output(&out));
    assert!(
        !stderr_str(&out).contains("panicked"),
        "{}",
        describe_output(&out)
    );
    assert_eq!(s.complete().len(), 3);

    // A stderr pipe whose reader is gone, stdout kept: the id is still printed.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = s
        .cmd()
        .args(["backup", "--no-prune"])
        .stdin(Stdio::null())
        .stderr(writer)
        .output()
        .unwrap();
    assert_eq!(
        exit_code(&out),
        0,
        "backup 2>&- pipe\n{}",
        describe_output(&out)
    );
    let ids = s.complete();
    assert_eq!(ids.len(), 4);
    assert_eq!(last_line(&out), ids[0]);

    // Other commands too: `list | head -1` with stderr kept.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = run(s.cmd().arg("list").stdout(writer));
    assert_eq!(exit_code(&out), 0, "list | true\n{}", describe_output(&out));
    assert!(!stderr_str(&out).contains("panicked"));
    // No lock was left: all of it took backup time, never a lock's expiry.
    assert!(started.elapsed() < Duration::from_secs(120));
    let _ = std::io::stderr().flush();
}

/// A backup cron with no day to fire on, and drill or backup crons every second: `config
/// check` exits 2 naming the key.
#[test]
fn schedules_that_never_fire_or_fire_every_second_are_config_errors() {
    let fx = Fixture::new();
    let (_, url) = fx.file_url("backups");
    let targets = format!("  snapshot: {{ url: \"{url}\" }}\n");
    let source = "source:\n  etcd:\n    endpoints: [\"http://127.0.0.1:1\"]\n";
    for (schedule, key, says) in [
        (
            "{ cron: \"0 0 30 2 *\" }",
            "schedule.cron",
            "no occurrence within the next year",
        ),
        (
            "{ cron: \"* * * * * *\" }",
            "schedule.cron",
            "more often than once a minute",
        ),
        (
            &*format!(
                "{{ cron: \"0 3 * * *\", drill: {{ cron: \"*/10 * * * * *\", identities: [\"{}\"] }} }}",
                fx.snapshot_key.display()
            ),
            "schedule.drill.cron",
            "more often than once a minute",
        ),
        (
            &*format!(
                "{{ cron: \"0 3 * * *\", drill: {{ cron: \"0 0 31 4 *\", identities: [\"{}\"] }} }}",
                fx.snapshot_key.display()
            ),
            "schedule.drill.cron",
            "no occurrence within the next year",
        ),
    ] {
        let config = fx.write_config(
            "c.yaml",
            source,
            &targets,
            &format!("schedule: {schedule}\n"),
        );
        let out = run(fx.cmd(&config).args(["config", "check"]));
        assert_eq!(exit_code(&out), 2, "{schedule}\n{}", describe_output(&out));
        let err = stderr_str(&out);
        assert!(
            err.contains(&format!("`{key}`")) && err.contains(says),
            "{schedule}: {err}"
        );
    }
}
