//! `copy`: complete trusted backups of the primary targets into a replica (3-2-1), each
//! checked there and committed by its manifest last ([`crate::repo::Repository::copy_backup`]).

use chrono::Utc;
use serde::Serialize;

use crate::config::Config;
use crate::error::UsageError;
use crate::repo::{Copied, Repository, Selection};
use crate::settings::{BackupScope, CopySettings};

#[derive(Debug, Serialize)]
struct Outcome {
    id: String,
    /// `copied`, `already_complete`, or `failed`.
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub async fn run(config: &Config, args: &CopySettings) -> anyhow::Result<()> {
    let source = Repository::primary(config)?;
    let replica = Repository::replica(config, &args.to)?;
    let ids: Vec<String> = match &args.scope {
        BackupScope::All => {
            let catalog = source.catalog(Utc::now()).await?;
            // Oldest first: a run cut short has copied the backups retention keeps longest.
            let mut ids: Vec<String> = catalog.trusted().map(|e| e.id.clone()).collect();
            ids.reverse();
            ids
        }
        BackupScope::One(Selection::Latest) => match source.newest_trusted(Utc::now()).await? {
            Some(entry) => vec![entry.id],
            None => {
                return Err(UsageError(format!(
                    "no complete backup of cluster {} to copy yet",
                    config.cluster
                ))
                .into());
            }
        },
        BackupScope::One(Selection::Id(id)) => vec![id.clone()],
    };
    let mut outcomes = Vec::new();
    let mut first_failure = None;
    for id in ids {
        let outcome = match source.copy_backup(&replica, &id).await {
            Ok(copied) => Outcome {
                id,
                result: match copied {
                    Copied::Copied => "copied",
                    Copied::AlreadyComplete => "already_complete",
                },
                error: None,
            },
            Err(e) => {
                let text = format!("{e:#}");
                tracing::error!(%id, replica = %args.to, error = %text, "copy failed");
                let context = format!("copying backup {id} to replica {}", args.to);
                first_failure.get_or_insert(e.context(context));
                Outcome {
                    id,
                    result: "failed",
                    error: Some(text),
                }
            }
        };
        if !args.json {
            match outcome.result {
                "copied" => println!("{} copied to {}", outcome.id, args.to),
                "already_complete" => {
                    println!("{} already complete in {}", outcome.id, args.to)
                }
                _ => println!("{} FAILED", outcome.id),
            }
        }
        outcomes.push(outcome);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
    }
    match first_failure {
        None => Ok(()),
        Some(e) => Err(e),
    }
}
