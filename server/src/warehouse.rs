//! The warehouse: one `object_store` root under which every table lives
//! (`batch_parquet_data/…`, `output/…`, DESIGN §2).
//!
//! [`Warehouse::open`] accepts what users type: a plain local path (created if
//! missing), `file:///abs/path`, `s3://bucket/prefix` (credentials, region and a
//! custom endpoint such as MinIO's from the usual `AWS_*` variables, e.g.
//! `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP=true`), or `memory://` for tests.

use std::path::Path;
use std::sync::Arc;

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use url::Url;

/// One batch as a Parquet file in memory, compressed with `compression`.
pub fn parquet_bytes(
    batch: &datafusion::arrow::array::RecordBatch,
    compression: parquet::basic::Compression,
) -> parquet::errors::Result<bytes::Bytes> {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(compression)
        .build();
    let mut writer = parquet::arrow::ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props))?;
    writer.write(batch)?;
    Ok(bytes::Bytes::from(writer.into_inner()?))
}

/// The JSON object at `path` (a checkpoint, a manifest), or `T::default()`
/// when there is none yet; `what` names it in the error for a corrupt file.
pub async fn read_json_or_default<T: serde::de::DeserializeOwned + Default>(
    store: &dyn ObjectStore,
    path: &object_store::path::Path,
    what: &str,
) -> Result<T, DataFusionError> {
    use object_store::ObjectStoreExt;
    match store.get(path).await {
        Ok(got) => {
            let bytes = got.bytes().await?;
            serde_json::from_slice(&bytes)
                .map_err(|e| DataFusionError::Execution(format!("{what} {path}: {e}")))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(T::default()),
        Err(e) => Err(e.into()),
    }
}

/// Why the warehouse URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// Not a URL we understand.
    #[error("invalid warehouse {spec:?}: {reason}")]
    Invalid {
        /// What the user gave.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The local folder could not be created or resolved.
    #[error("cannot use warehouse folder {path}: {source}")]
    Io {
        /// The folder.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The object store client could not be built (e.g. missing S3 settings).
    #[error("cannot open warehouse {spec}: {source}")]
    Store {
        /// The warehouse URL.
        spec: String,
        /// The object store's error.
        source: object_store::Error,
    },
}

/// An opened warehouse root: its URL (always ending in `/`) and its store.
#[derive(Debug, Clone)]
pub struct Warehouse {
    root: Url,
    store: Arc<dyn ObjectStore>,
}

impl Warehouse {
    /// Opens the warehouse the user named (see the module docs for the forms).
    pub fn open(spec: &str) -> Result<Self, WarehouseError> {
        let invalid = |reason: String| WarehouseError::Invalid {
            spec: spec.to_owned(),
            reason,
        };
        if !spec.contains("://") {
            return Self::local(Path::new(spec));
        }
        let mut root = Url::parse(spec).map_err(|e| invalid(e.to_string()))?;
        if !root.path().ends_with('/') {
            let path = format!("{}/", root.path());
            root.set_path(&path);
        }
        match root.scheme() {
            "file" => {
                let path = root
                    .to_file_path()
                    .map_err(|()| invalid("not an absolute file path".into()))?;
                Self::local(&path)
            }
            "s3" | "s3a" => {
                let bucket = root
                    .host_str()
                    .ok_or_else(|| invalid("s3 URL without a bucket".into()))?;
                let store = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|source| WarehouseError::Store {
                        spec: spec.to_owned(),
                        source,
                    })?;
                Ok(Self {
                    root,
                    store: Arc::new(store),
                })
            }
            "memory" => Ok(Self {
                root,
                store: Arc::new(InMemory::new()),
            }),
            other => Err(invalid(format!(
                "unsupported scheme {other:?} (use a path, file://, s3:// or memory://)"
            ))),
        }
    }

    /// A warehouse at `root` (ending in `/`) on a store the caller built, for
    /// programs that embed recon's storage code with their own store settings.
    pub fn with_store(root: Url, store: Arc<dyn ObjectStore>) -> Self {
        Self { root, store }
    }

    fn local(path: &Path) -> Result<Self, WarehouseError> {
        let io = |source| WarehouseError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(path).map_err(io)?;
        let abs = path.canonicalize().map_err(io)?;
        let root = Url::from_directory_path(&abs).map_err(|()| WarehouseError::Invalid {
            spec: abs.display().to_string(),
            reason: "not an absolute path".into(),
        })?;
        Ok(Self {
            root,
            store: Arc::new(LocalFileSystem::new()),
        })
    }

    /// The root URL, ending in `/`.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The object store holding the warehouse.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// Makes the store reachable from DataFusion plans under the root's scheme and host.
    pub fn register(&self, runtime: &RuntimeEnv) {
        runtime.register_object_store(&self.root, self.store());
    }

    /// The URL of `relative` (e.g. `batch_parquet_data/merchants.parquet`).
    pub fn url(&self, relative: &str) -> Result<Url, DataFusionError> {
        self.root
            .join(relative)
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }

    /// A DataFusion listing URL for `relative`: a single file or a folder of files.
    pub fn listing_url(&self, relative: &str) -> Result<ListingTableUrl, DataFusionError> {
        ListingTableUrl::parse(self.url(relative)?)
    }

    /// The local file-system path of `relative`, when the warehouse is local.
    pub fn local_path(&self, relative: &str) -> Option<std::path::PathBuf> {
        self.url(relative).ok()?.to_file_path().ok()
    }

    /// The object-store path of `relative`, for direct reads and writes.
    pub fn path(&self, relative: &str) -> Result<object_store::path::Path, DataFusionError> {
        let url = self.url(relative)?;
        if url.scheme() == "file" {
            let file = url
                .to_file_path()
                .map_err(|()| DataFusionError::Internal(format!("bad file URL {url}")))?;
            return object_store::path::Path::from_absolute_path(file)
                .map_err(|e| DataFusionError::External(Box::new(e)));
        }
        object_store::path::Path::from_url_path(url.path())
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_become_file_urls() {
        let dir = tempfile::tempdir().unwrap();
        let w = Warehouse::open(dir.path().join("wh").to_str().unwrap()).unwrap();
        assert_eq!(w.root().scheme(), "file");
        assert!(w.root().path().ends_with("/wh/"), "{}", w.root());
        assert!(dir.path().join("wh").is_dir());
        let again = Warehouse::open(w.root().as_str()).unwrap();
        assert_eq!(again.root(), w.root());
        let url = w.url("batch_parquet_data/merchants.parquet").unwrap();
        assert!(
            url.as_str()
                .ends_with("/wh/batch_parquet_data/merchants.parquet")
        );
    }

    #[test]
    fn s3_and_unknown_schemes() {
        let w = Warehouse::open("s3://bucket/some/prefix").unwrap();
        assert_eq!(w.root().as_str(), "s3://bucket/some/prefix/");
        assert_eq!(w.path("output/x").unwrap().as_ref(), "some/prefix/output/x");
        let err = Warehouse::open("ftp://host/x").unwrap_err();
        assert!(err.to_string().contains("unsupported scheme"), "{err}");
    }
}
