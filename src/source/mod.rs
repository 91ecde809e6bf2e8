//! Where artifacts come from: a live etcd, cluster-backup.sh's files, static resources.

pub mod backup_dir;
pub mod content;
pub mod etcd;
pub mod openshift_tls;
pub mod pace;
pub mod static_resources;
