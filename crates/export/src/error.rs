//! What can go wrong in an export.

/// An export that could not start or could not finish.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The query itself is wrong (an empty or reversed range, an unknown format).
    #[error("{0}")]
    BadQuery(String),
    /// Reading the store failed.
    #[error("reading the store: {0}")]
    Store(#[from] mekong_store::StoreError),
    /// Writing the output failed (a full disk, or a client that hung up).
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    /// The Parquet writer refused (a bug of ours, or an I/O error it wrapped).
    #[error("writing Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}
