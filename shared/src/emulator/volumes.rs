//! The emulator's data volumes: the same five, at the same paths, in the deps container that
//! runs the migrations and in the smoke test of the slim image.

/// `(volume, mount point in the container)` for each data volume, in the original's order.
pub const DATA_VOLUMES: [(&str, &str); 5] = [
    ("stack-postgres-data", "/data/postgres"),
    ("stack-redis-data", "/data/redis"),
    ("stack-clickhouse-data", "/data/clickhouse"),
    ("stack-minio-data", "/data/minio"),
    ("stack-inbucket-data", "/data/inbucket"),
];

/// `-v NAME:PATH` for each data volume, as `docker run` takes them.
pub fn volume_args() -> Vec<String> {
    DATA_VOLUMES
        .iter()
        .flat_map(|(name, path)| ["-v".to_string(), format!("{name}:{path}")])
        .collect()
}
