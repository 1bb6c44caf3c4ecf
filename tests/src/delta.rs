//! What a view's Delta table holds on disk, read with recon's own
//! `IndexTable` (delta-rs): its versions, the data files a version uses, and
//! the data files in its folder — for the snapshot, crash and retention tests.

use std::collections::BTreeSet;
use std::path::Path;

use recon_server::snapshots::delta::{IndexTable, Version};
use recon_server::warehouse::Warehouse;

fn index(warehouse: &Path, view: &str) -> IndexTable {
    let warehouse = Warehouse::open(warehouse.to_str().expect("utf-8 path")).expect("warehouse");
    IndexTable::new(&warehouse, view)
}

/// Every version in `view`'s log, newest first.
pub async fn versions(warehouse: &Path, view: &str) -> Vec<Version> {
    index(warehouse, view).history().await.expect("history")
}

/// The newest version a refresh wrote, and its run id.
pub async fn current_refresh(warehouse: &Path, view: &str) -> (u64, String) {
    versions(warehouse, view)
        .await
        .into_iter()
        .find_map(|v| v.refresh.map(|r| (v.version, r.run_id)))
        .expect("a refresh commit")
}

/// Names of the data files `version` of `view`'s table uses.
pub async fn files_of(warehouse: &Path, view: &str, version: u64) -> BTreeSet<String> {
    let table = index(warehouse, view)
        .load_version(version)
        .await
        .expect("version");
    table
        .get_file_uris()
        .expect("files")
        .map(|uri| uri.rsplit('/').next().unwrap_or_default().to_owned())
        .collect()
}

/// Names of the data files the newest `refreshes` refresh versions of
/// `view`'s table use, together.
pub async fn files_of_refreshes(
    warehouse: &Path,
    view: &str,
    refreshes: usize,
) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let versions = versions(warehouse, view).await;
    for v in versions
        .iter()
        .filter(|v| v.refresh.is_some())
        .take(refreshes)
    {
        used.extend(files_of(warehouse, view, v.version).await);
    }
    used
}

/// Names of the files in `view`'s folder (data files, and uploads an
/// interrupted write left staged as `<file>#<n>`), not the log.
pub fn files_on_disk(warehouse: &Path, view: &str) -> BTreeSet<String> {
    std::fs::read_dir(warehouse.join("output").join(view))
        .map(|dir| {
            dir.map(|e| e.expect("entry"))
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.file_name().into_string().expect("utf-8"))
                .collect()
        })
        .unwrap_or_default()
}
