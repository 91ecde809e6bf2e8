//! Property tests: whatever text the loader is given, it never panics, and every error
//! names a key and says what is wrong.

use proptest::prelude::*;

use super::testing::{KEYS, SNAP};
use super::{Purpose, parse};

/// A config using every section, valid on a host that reads backups.
fn full() -> String {
    format!(
        "version: 1\n\
         cluster: prod-east\n\
         source:\n  \
           etcd:\n    \
             endpoints: [\"https://10.0.0.1:2379\", \"https://10.0.0.2:2379\"]\n    \
             cacert: /etc/etcd/ca.crt\n    \
             cert: /etc/etcd/client.crt\n    \
             key: /etc/etcd/client.key\n    \
             timeout: 30s\n    \
             read_rate_limit: 200MiB\n  \
           static_resources:\n    \
             base_dir: /etc/kubernetes\n    \
             paths: [\"/etc/kubernetes/static-pod-resources/kube-apiserver-pod-12\"]\n\
         compression: {{ level: 3, threads: 0 }}\n\
         priority: low\n\
         encryption:\n  \
           snapshot:\n    \
             recipients: [\"{SNAP}\"]\n  \
           static_resources:\n    \
             recipients: [\"{KEYS}\"]\n\
         targets:\n  \
           snapshot:\n    \
             url: s3://backups/etcd\n    \
             options: {{ aws_region: eu-west-1 }}\n  \
           static_resources:\n    \
             url: file:///mnt/nfs/etcd-keys\n  \
           lock_stale_after: 3m\n\
         retention: {{ keep_last: 3, keep_daily: 7, keep_within: 48h, max_total_size: 50GiB, min_keep: 2 }}\n\
         schedule: {{ cron: \"0 3 * * *\", jitter: 10m }}\n\
         labels: {{ platform_version: \"4.14.7\" }}\n"
    )
}

/// Values that have found trouble in YAML loaders and in this one's checks.
const TRICKY: &[&str] = &[
    "",
    "~",
    "null",
    "[]",
    "{}",
    "-1",
    "0",
    "1e999",
    "18446744073709551616",
    "0x7fffffff",
    "300000y",
    "0s",
    "1ns",
    "99999999999999999999d",
    "1 EiB",
    "16EiB",
    "-5MiB",
    "1.5GiB",
    "NaN",
    "true",
    "\"\"",
    "age1",
    "AGE-SECRET-KEY-1QQQQ",
    "s3://",
    "file://",
    "az://x",
    "gs:///",
    "http://[::1",
    "&anchor x",
    "*alias",
    "!!binary x",
    "|",
    ">-",
    "[unclosed",
    "{ a: }",
    "\"\\u0000\"",
    "* * * * * * * *",
    "@reboot",
    "- x",
    "? x",
];

/// A tricky value, or anything at all.
fn tricky_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(TRICKY).prop_map(str::to_string),
        any::<String>(),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
    ]
}

/// One change to a config text, by line.
#[derive(Debug, Clone)]
enum Edit {
    /// The value after the line's first `:` replaced.
    Value(usize, String),
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    /// An unknown key inserted with the line's indentation.
    UnknownKey(usize, String),
    Indent(usize, usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), tricky_value()).prop_map(|(l, v)| Edit::Value(l, v)),
        1 => any::<usize>().prop_map(Edit::DeleteLine),
        1 => any::<usize>().prop_map(Edit::DuplicateLine),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        1 => (any::<usize>(), "[a-z_]{1,10}").prop_map(|(l, k)| Edit::UnknownKey(l, k)),
        1 => (any::<usize>(), 0usize..6).prop_map(|(l, n)| Edit::Indent(l, n)),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let n = lines.len().max(1);
    match edit {
        Edit::Value(l, value) => {
            if let Some(line) = lines.get_mut(l % n)
                && let Some(colon) = line.find(':')
            {
                line.truncate(colon + 1);
                line.push(' ');
                line.push_str(value);
            }
        }
        Edit::DeleteLine(l) if !lines.is_empty() => {
            lines.remove(l % n);
        }
        Edit::DuplicateLine(l) if !lines.is_empty() => {
            let line = lines[l % n].clone();
            lines.insert(l % n, line);
        }
        Edit::SwapLines(a, b) if !lines.is_empty() => lines.swap(a % n, b % n),
        Edit::UnknownKey(l, key) if !lines.is_empty() => {
            let line = &lines[l % n];
            let indent = line.len() - line.trim_start().len();
            let extra = format!("{}{key}: 1", " ".repeat(indent));
            lines.insert(l % n, extra);
        }
        Edit::Indent(l, spaces) if !lines.is_empty() => {
            let line = lines[l % n].trim_start().to_string();
            lines[l % n] = format!("{}{line}", " ".repeat(*spaces));
        }
        Edit::Truncate(at) => {
            let joined = lines.join("\n");
            let mut cut = at % (joined.len() + 1);
            while !joined.is_char_boundary(cut) {
                cut -= 1;
            }
            return joined[..cut].to_string();
        }
        _ => {}
    }
    lines.join("\n") + "\n"
}

/// Loads `text` for both purposes: no panic, and an error names a key and a problem.
fn check(text: &str) -> Result<(), TestCaseError> {
    for purpose in [Purpose::ReadBackups, Purpose::TakeBackups] {
        if let Err(e) = parse(text, purpose) {
            prop_assert!(!e.key.trim().is_empty(), "no key in {e} for {text:?}");
            prop_assert!(
                !e.problem.trim().is_empty(),
                "no problem in {e} for {text:?}"
            );
            let named = format!("`{}`", e.key);
            prop_assert!(e.to_string().contains(&named), "{e}");
        }
    }
    Ok(())
}

#[test]
fn the_full_config_is_valid() {
    parse(&full(), Purpose::ReadBackups).expect("the base of the mutations is valid");
}

proptest! {
    #![proptest_config(crate::property_config())]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check(&text)?;
    }

    #[test]
    fn arbitrary_yaml_shaped_text_never_panics(
        text in "([a-z_]{1,10}: ?[ -~]{0,20}\n( {2,4}[a-z_-]{1,10}: ?[ -~]{0,20}\n){0,3}){1,6}"
    ) {
        check(&text)?;
    }

    #[test]
    fn mutated_configs_never_panic_and_errors_name_a_key(
        edits in prop::collection::vec(edit(), 1..5)
    ) {
        let mut text = full();
        for e in &edits {
            text = apply(&text, e);
        }
        check(&text)?;
    }

    #[test]
    fn any_value_in_any_key_never_panics(line in any::<usize>(), value in tricky_value()) {
        check(&apply(&full(), &Edit::Value(line, value)))?;
    }
}
