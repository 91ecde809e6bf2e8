//! OpenShift objects as the API server stores them in etcd (JSON for config.openshift.io).

use super::EtcdServer;

/// The cluster operators whose rollouts a backup waits out (as cluster-backup.sh does).
pub const GUARDED_OPERATORS: [&str; 4] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "etcd",
];

/// Stores the ClusterOperator `name` with its Progressing condition.
pub fn set_operator(etcd: &EtcdServer, name: &str, progressing: bool) {
    let status = if progressing { "True" } else { "False" };
    etcd.put(
        &format!("/kubernetes.io/config.openshift.io/clusteroperators/{name}"),
        format!(
            r#"{{"apiVersion":"config.openshift.io/v1","kind":"ClusterOperator","metadata":{{"name":"{name}"}},"status":{{"conditions":[{{"type":"Available","status":"True"}},{{"type":"Progressing","status":"{status}","message":"NodeInstallerProgressing: 2 nodes are at revision 7; 1 node is at revision 8"}}]}}}}"#
        ),
    );
}

/// Every guarded operator settled (Progressing=False).
pub fn settle_operators(etcd: &EtcdServer) {
    for name in GUARDED_OPERATORS {
        set_operator(etcd, name, false);
    }
}

/// Where OpenShift keeps the ClusterVersion object.
pub const CLUSTER_VERSION_KEY: &str = "/kubernetes.io/config.openshift.io/clusterversions/version";

/// A ClusterVersion object whose `status.history` holds `(state, version, started hours
/// ago)` entries, newest first as OpenShift keeps them; a Completed entry completed an
/// hour after it started.
pub fn cluster_version(history: &[(&str, &str, i64)]) -> String {
    let at = |hours_ago: i64| {
        (chrono::Utc::now() - chrono::TimeDelta::hours(hours_ago))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let entries: Vec<serde_json::Value> = history
        .iter()
        .map(|(state, version, started_h)| {
            serde_json::json!({
                "state": state,
                "version": version,
                "image": format!("quay.io/openshift-release-dev/ocp-release@sha256:{version}"),
                "verified": false,
                "startedTime": at(*started_h),
                "completionTime": (*state == "Completed").then(|| at((started_h - 1).max(0))),
            })
        })
        .collect();
    serde_json::json!({
        "kind": "ClusterVersion",
        "apiVersion": "config.openshift.io/v1",
        "metadata": { "name": "version" },
        "status": { "history": entries },
    })
    .to_string()
}

/// Stores a ClusterVersion object (see [`cluster_version`]).
pub fn set_cluster_version(etcd: &EtcdServer, history: &[(&str, &str, i64)]) {
    etcd.put(CLUSTER_VERSION_KEY, cluster_version(history));
}
