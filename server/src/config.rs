//! Server configuration: built-in defaults, then a TOML file, then `RECON_*`
//! environment variables, then command-line flags (each later layer wins).
//!
//! The file mirrors [`Config`] (unknown keys are rejected, so a typo is an error
//! rather than a silent default). Every key is also a flag and an env var, see
//! [`ConfigArgs`]; `recon print-config` shows the effective result.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use recon_udfs::{InvalidRules, KpiMultiplier, Rules};
use serde::{Deserialize, Serialize};

/// The effective configuration of one `recon` server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Warehouse root: an `object_store` URL (`file:///abs/path`, `s3://bucket/prefix`)
    /// or a plain local path.
    pub warehouse: String,
    /// Address of the Arrow Flight SQL (gRPC) endpoint.
    pub flight_addr: SocketAddr,
    /// Address of the HTTP endpoint (ML signals API, health, metrics).
    pub http_addr: SocketAddr,
    /// Flight SQL authentication (off unless a user is set).
    pub auth: Auth,
    /// Per-query and server-wide query limits.
    pub limits: Limits,
    /// TLS for the Flight SQL endpoint (on when both files are set).
    pub tls: Tls,
    /// How batch tables are held.
    pub tables: Tables,
    /// Kafka ingest (off unless brokers are set).
    pub kafka: Kafka,
    /// The index views' SQL (defaults compiled in).
    pub indexes: Indexes,
    /// Business rules of the five reconciliation functions.
    pub rules: Rules,
}

/// Authentication (Flight SQL and HTTP): Basic user/password in the handshake
/// (or on an HTTP request), then a Bearer token on every call. Off when no user
/// is configured, which is only allowed while both listen addresses are
/// loopback.
///
/// Users come from `[[auth.users]]` (name, argon2 `password_hash` from
/// `recon hash-password`, role); the single `user`/`password` pair is one more
/// user with the `admin` role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// A user name with the admin role (with `password`); unset = none.
    pub user: Option<String>,
    /// That user's password, in clear.
    pub password: Option<String>,
    /// Further users, each with a password hash and a role.
    pub users: Vec<User>,
    /// How long a Bearer token stays valid, in seconds.
    pub token_ttl_secs: u64,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            user: None,
            password: None,
            users: Vec::new(),
            token_ttl_secs: 24 * 3600,
        }
    }
}

impl Auth {
    /// Whether any user is configured (then every call needs credentials).
    pub fn enabled(&self) -> bool {
        self.user.is_some() || !self.users.is_empty()
    }
}

/// One user of `[[auth.users]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The login name.
    pub name: String,
    /// The password as an argon2 PHC string (`recon hash-password`).
    pub password_hash: String,
    /// What the user may do.
    pub role: Role,
}

/// What a user may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Queries and metadata.
    Read,
    /// Plus bulk ingest and `POST /ml_signals`.
    Write,
    /// Plus `REFRESH INDEX` and shared views (CREATE VIEW / DROP VIEW).
    Admin,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        })
    }
}

/// Query limits. A zero means "no limit" for memory and timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Memory one query may hold (hash tables, sorts), in MiB; 0 = unlimited.
    pub query_memory_mb: u64,
    /// Wall time one query may run, in seconds; 0 = unlimited.
    pub query_timeout_secs: u64,
    /// Queries running at once; more are refused with ResourceExhausted.
    pub max_concurrent_queries: usize,
    /// Deepest expression nesting a statement may have (a `1+1+…` chain of n
    /// terms nests n levels); deeper ones are refused with InvalidArgument.
    pub max_expression_depth: usize,
    /// Largest value (one string or array) a function may build, in MiB.
    pub max_value_mb: u64,
    /// Threads of the query runtime (queries and refreshes run there, apart
    /// from the gRPC/HTTP runtime); 0 = one per core.
    pub query_threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            query_memory_mb: 4096,
            query_timeout_secs: 600,
            max_concurrent_queries: 32,
            max_expression_depth: 5000,
            max_value_mb: 64,
            query_threads: 0,
        }
    }
}

/// Batch tables: how much decoded data may be kept in memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tables {
    /// MiB of decoded batch-table data kept in memory (shared by all tables);
    /// a table that does not fit is read from Parquet on every query. 0 = off.
    pub cache_mb: u64,
}

impl Default for Tables {
    fn default() -> Self {
        Self { cache_mb: 4096 }
    }
}

/// The index views: files replacing their default SQL (each holds one
/// `CREATE VIEW <name> AS …` statement; errors are reported at start with the
/// file and the position), and their materialisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Indexes {
    /// SQL file for `batch_index`.
    pub batch_index_sql: Option<PathBuf>,
    /// SQL file for `final_index`.
    pub final_index_sql: Option<PathBuf>,
    /// SQL file for `merchant_daily_kpi`.
    pub merchant_daily_kpi_sql: Option<PathBuf>,
    /// Seconds between scheduled refreshes of all three snapshots; 0 = only on demand.
    pub refresh_interval_secs: u64,
    /// Snapshots kept per view (the newest is `<view>_snapshot`); at least 1.
    pub snapshot_retention: usize,
}

impl Indexes {
    /// Whether all three views are the built-in ones (incremental refreshes
    /// rely on their keys).
    pub fn uses_builtin_views(&self) -> bool {
        self.batch_index_sql.is_none()
            && self.final_index_sql.is_none()
            && self.merchant_daily_kpi_sql.is_none()
    }
}

impl Default for Indexes {
    fn default() -> Self {
        Self {
            batch_index_sql: None,
            final_index_sql: None,
            merchant_daily_kpi_sql: None,
            refresh_interval_secs: 0,
            snapshot_retention: 3,
        }
    }
}

/// Kafka ingest of the transactions topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Kafka {
    /// Bootstrap servers `HOST:PORT[,HOST:PORT]`; unset = no ingest.
    pub brokers: Option<String>,
    /// The topic of transaction events.
    pub topic: String,
    /// Consumer group id (offsets are committed there only for lag tools).
    pub group_id: String,
    /// Records larger than this go to `transactions_rejects`.
    pub max_record_bytes: usize,
    /// Seconds between flushes of the live tail to Parquet segments.
    pub flush_interval_secs: u64,
    /// Unflushed rows that trigger a flush before the interval is up.
    pub flush_rows: usize,
    /// Bound on unflushed rows in memory: at the bound consumption pauses until
    /// a flush succeeds.
    pub max_unflushed_rows: usize,
    /// How partitions are shared out: `manual` (this server consumes every
    /// partition) or `group` (several servers in the consumer group `group_id`
    /// share them, each showing the others' partitions as they are persisted).
    pub assignment: Assignment,
    /// This server's name in the group: names its checkpoint file; unset = the
    /// host name and the Flight SQL port.
    pub member: Option<String>,
    /// Extra librdkafka consumer properties (e.g. `session.timeout.ms`, SASL).
    pub properties: std::collections::BTreeMap<String, String>,
}

/// How a server gets its Kafka partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Assignment {
    /// Every partition, found by periodic discovery (one server per topic).
    #[default]
    Manual,
    /// The consumer group hands out partitions (several servers per topic).
    Group,
}

impl Default for Kafka {
    fn default() -> Self {
        Self {
            brokers: None,
            topic: "transactions_topic".into(),
            group_id: "recon".into(),
            max_record_bytes: 1 << 20,
            flush_interval_secs: 5,
            flush_rows: 200_000,
            max_unflushed_rows: 2_000_000,
            assignment: Assignment::Manual,
            member: None,
            properties: std::collections::BTreeMap::new(),
        }
    }
}

/// TLS certificate and key (PEM files) for the Flight SQL endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// Certificate chain, PEM.
    pub cert: Option<PathBuf>,
    /// Private key, PEM.
    pub key: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            warehouse: "./recon-data".to_owned(),
            flight_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            auth: Auth::default(),
            limits: Limits::default(),
            tls: Tls::default(),
            tables: Tables::default(),
            kafka: Kafka::default(),
            indexes: Indexes::default(),
            rules: Rules::default(),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file named by `--config`.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for [`Config`].
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file named by `--config`.
        path: PathBuf,
        /// The parser's message, naming the key and position.
        message: String,
    },
    /// A `--kpi-multipliers` entry is not `PREFIX=NUMBER`.
    #[error("invalid --kpi-multipliers entry {0:?}: expected PREFIX=NUMBER")]
    KpiMultiplier(String),
    /// A `--kafka-properties` entry without `=`.
    #[error("kafka property {0:?} is not KEY=VALUE")]
    KafkaProperty(String),
    /// Listening beyond loopback needs a user and password.
    #[error(
        "{0} is not a loopback address: listening on it (flight_addr or http_addr) needs auth.user and auth.password (--auth-user/--auth-password)"
    )]
    AuthRequired(SocketAddr),
    /// A `password_hash` that is not a PHC string.
    #[error(
        "auth.users: the password_hash of {0:?} is not a PHC string: make one with `recon hash-password`"
    )]
    PasswordHash(String),
    /// A user without a password, or the other way round.
    #[error("auth.user and auth.password must be set together")]
    AuthIncomplete,
    /// Only one of the TLS files is set.
    #[error("tls.cert and tls.key must be set together")]
    TlsIncomplete,
    /// `snapshot_retention` is zero.
    #[error("indexes.snapshot_retention must be at least 1")]
    NoSnapshots,
    /// `max_concurrent_queries` is zero.
    #[error("limits.max_concurrent_queries must be at least 1")]
    NoQueries,
    /// The rules make no sense (see [`Rules::validate`]).
    #[error(transparent)]
    Rules(#[from] InvalidRules),
}

/// Configuration flags, each also readable from a `RECON_*` environment variable.
/// Unset flags leave the file's (or the default) value alone.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML config file (keys as in `recon print-config`).
    #[arg(long, env = "RECON_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Warehouse root URL or path [default: ./recon-data].
    #[arg(long, env = "RECON_WAREHOUSE", value_name = "URL")]
    pub warehouse: Option<String>,
    /// Flight SQL listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "RECON_FLIGHT_ADDR", value_name = "ADDR")]
    pub flight_addr: Option<SocketAddr>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "RECON_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// auth.user: the user Flight SQL clients log in as; unset = no authentication.
    #[arg(long, env = "RECON_AUTH_USER", value_name = "USER")]
    pub auth_user: Option<String>,
    /// auth.password: that user's password.
    #[arg(long, env = "RECON_AUTH_PASSWORD", value_name = "PASSWORD")]
    pub auth_password: Option<String>,
    /// auth.token_ttl_secs: lifetime of a Bearer token [default: 86400].
    #[arg(long, env = "RECON_TOKEN_TTL_SECS", value_name = "SECS")]
    pub token_ttl_secs: Option<u64>,
    /// limits.query_memory_mb: memory one query may use, 0 = unlimited [default: 4096].
    #[arg(long, env = "RECON_QUERY_MEMORY_MB", value_name = "MIB")]
    pub query_memory_mb: Option<u64>,
    /// limits.query_timeout_secs: wall time one query may run, 0 = unlimited [default: 600].
    #[arg(long, env = "RECON_QUERY_TIMEOUT_SECS", value_name = "SECS")]
    pub query_timeout_secs: Option<u64>,
    /// limits.max_concurrent_queries: queries running at once [default: 32].
    #[arg(long, env = "RECON_MAX_CONCURRENT_QUERIES", value_name = "N")]
    pub max_concurrent_queries: Option<usize>,
    /// limits.max_expression_depth: deepest expression nesting a statement may have [default: 5000].
    #[arg(long, env = "RECON_MAX_EXPRESSION_DEPTH", value_name = "N")]
    pub max_expression_depth: Option<usize>,
    /// limits.max_value_mb: largest value a function may build [default: 64].
    #[arg(long, env = "RECON_MAX_VALUE_MB", value_name = "MIB")]
    pub max_value_mb: Option<u64>,
    /// limits.query_threads: threads running queries, 0 = one per core [default: 0].
    #[arg(long, env = "RECON_QUERY_THREADS", value_name = "N")]
    pub query_threads: Option<usize>,
    /// tls.cert: PEM certificate chain; with --tls-key turns TLS on.
    #[arg(long, env = "RECON_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// tls.key: PEM private key.
    #[arg(long, env = "RECON_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// tables.cache_mb: decoded batch-table data kept in memory, 0 = off [default: 4096].
    #[arg(long, env = "RECON_TABLE_CACHE_MB", value_name = "MIB")]
    pub table_cache_mb: Option<u64>,
    /// kafka.brokers: bootstrap servers HOST:PORT; turns Kafka ingest on.
    #[arg(long, env = "RECON_KAFKA_BROKERS", value_name = "HOST:PORT")]
    pub kafka_brokers: Option<String>,
    /// kafka.topic: the transactions topic [default: transactions_topic].
    #[arg(long, env = "RECON_KAFKA_TOPIC", value_name = "TOPIC")]
    pub kafka_topic: Option<String>,
    /// kafka.group_id: consumer group for lag tools [default: recon].
    #[arg(long, env = "RECON_KAFKA_GROUP_ID", value_name = "GROUP")]
    pub kafka_group_id: Option<String>,
    /// kafka.max_record_bytes: larger records are rejected [default: 1048576].
    #[arg(long, env = "RECON_KAFKA_MAX_RECORD_BYTES", value_name = "BYTES")]
    pub kafka_max_record_bytes: Option<usize>,
    /// kafka.flush_interval_secs: seconds between Parquet flushes of the tail [default: 5].
    #[arg(long, env = "RECON_KAFKA_FLUSH_INTERVAL_SECS", value_name = "SECS")]
    pub kafka_flush_interval_secs: Option<u64>,
    /// kafka.flush_rows: unflushed rows that trigger an early flush [default: 200000].
    #[arg(long, env = "RECON_KAFKA_FLUSH_ROWS", value_name = "ROWS")]
    pub kafka_flush_rows: Option<usize>,
    /// kafka.max_unflushed_rows: at this many unflushed rows consumption pauses [default: 2000000].
    #[arg(long, env = "RECON_KAFKA_MAX_UNFLUSHED_ROWS", value_name = "ROWS")]
    pub kafka_max_unflushed_rows: Option<usize>,
    /// kafka.assignment: manual (one server consumes every partition) or group (servers share the group's partitions) [default: manual].
    #[arg(long, env = "RECON_KAFKA_ASSIGNMENT", value_name = "MODE")]
    pub kafka_assignment: Option<Assignment>,
    /// kafka.member: this server's name in the group (its checkpoint file) [default: host name and Flight port].
    #[arg(long, env = "RECON_KAFKA_MEMBER", value_name = "NAME")]
    pub kafka_member: Option<String>,
    /// kafka.properties: extra librdkafka properties as KEY=VALUE, comma-separated (added to the file's).
    #[arg(
        long,
        env = "RECON_KAFKA_PROPERTIES",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    pub kafka_properties: Option<Vec<String>>,
    /// indexes.batch_index_sql: a file with your own CREATE VIEW batch_index.
    #[arg(long, env = "RECON_BATCH_INDEX_SQL", value_name = "FILE")]
    pub batch_index_sql: Option<PathBuf>,
    /// indexes.final_index_sql: a file with your own CREATE VIEW final_index.
    #[arg(long, env = "RECON_FINAL_INDEX_SQL", value_name = "FILE")]
    pub final_index_sql: Option<PathBuf>,
    /// indexes.merchant_daily_kpi_sql: a file with your own CREATE VIEW merchant_daily_kpi.
    #[arg(long, env = "RECON_MERCHANT_DAILY_KPI_SQL", value_name = "FILE")]
    pub merchant_daily_kpi_sql: Option<PathBuf>,
    /// indexes.refresh_interval_secs: seconds between scheduled snapshot refreshes, 0 = on demand only [default: 0].
    #[arg(long, env = "RECON_REFRESH_INTERVAL_SECS", value_name = "SECS")]
    pub refresh_interval_secs: Option<u64>,
    /// indexes.snapshot_retention: snapshots kept per view [default: 3].
    #[arg(long, env = "RECON_SNAPSHOT_RETENTION", value_name = "N")]
    pub snapshot_retention: Option<usize>,
    /// rules.risk_threshold: fraud score above which flag_compliance says high risk [default: 0.8].
    #[arg(long, env = "RECON_RISK_THRESHOLD")]
    pub risk_threshold: Option<f64>,
    /// rules.high_risk_words, comma-separated [default: BLACKLIST].
    #[arg(long, env = "RECON_HIGH_RISK_WORDS", value_delimiter = ',')]
    pub high_risk_words: Option<Vec<String>>,
    /// rules.kyc_words, comma-separated [default: KYC].
    #[arg(long, env = "RECON_KYC_WORDS", value_delimiter = ',')]
    pub kyc_words: Option<Vec<String>>,
    /// rules.mask_keep: characters mask_sensitive keeps [default: 2].
    #[arg(long, env = "RECON_MASK_KEEP")]
    pub mask_keep: Option<usize>,
    /// rules.mask_char: the masking character [default: *].
    #[arg(long, env = "RECON_MASK_CHAR")]
    pub mask_char: Option<char>,
    /// rules.kpi_multipliers as PREFIX=NUMBER, comma-separated [default: MCH-A=1.1].
    #[arg(long, env = "RECON_KPI_MULTIPLIERS", value_delimiter = ',')]
    pub kpi_multipliers: Option<Vec<String>>,
    /// rules.labels.high_risk [default: HIGH_RISK].
    #[arg(long, env = "RECON_LABEL_HIGH_RISK")]
    pub label_high_risk: Option<String>,
    /// rules.labels.requires_kyc [default: REQUIRES_KYC].
    #[arg(long, env = "RECON_LABEL_REQUIRES_KYC")]
    pub label_requires_kyc: Option<String>,
    /// rules.labels.ok [default: OK].
    #[arg(long, env = "RECON_LABEL_OK")]
    pub label_ok: Option<String>,
    /// rules.labels.unknown [default: UNKNOWN].
    #[arg(long, env = "RECON_LABEL_UNKNOWN")]
    pub label_unknown: Option<String>,
    /// rules.labels.matched [default: MATCHED].
    #[arg(long, env = "RECON_LABEL_MATCHED")]
    pub label_matched: Option<String>,
    /// rules.labels.unmatched [default: UNMATCHED].
    #[arg(long, env = "RECON_LABEL_UNMATCHED")]
    pub label_unmatched: Option<String>,
    /// rules.labels.discrepancy [default: DISCREPANCY].
    #[arg(long, env = "RECON_LABEL_DISCREPANCY")]
    pub label_discrepancy: Option<String>,
}

/// Replaces `target` with `value` when the layer set it.
fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *target = v;
    }
}

impl ConfigArgs {
    /// Builds the effective configuration: defaults, the file, then env and flags.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => read_file(path)?,
            None => Config::default(),
        };
        let a = self.clone();
        set(&mut config.warehouse, a.warehouse);
        set(&mut config.flight_addr, a.flight_addr);
        set(&mut config.http_addr, a.http_addr);
        if a.auth_user.is_some() {
            config.auth.user = a.auth_user;
        }
        if a.auth_password.is_some() {
            config.auth.password = a.auth_password;
        }
        set(&mut config.auth.token_ttl_secs, a.token_ttl_secs);
        set(&mut config.limits.query_memory_mb, a.query_memory_mb);
        set(&mut config.limits.query_timeout_secs, a.query_timeout_secs);
        set(
            &mut config.limits.max_concurrent_queries,
            a.max_concurrent_queries,
        );
        set(
            &mut config.limits.max_expression_depth,
            a.max_expression_depth,
        );
        set(&mut config.limits.max_value_mb, a.max_value_mb);
        set(&mut config.limits.query_threads, a.query_threads);
        if a.tls_cert.is_some() {
            config.tls.cert = a.tls_cert;
        }
        if a.tls_key.is_some() {
            config.tls.key = a.tls_key;
        }
        set(&mut config.tables.cache_mb, a.table_cache_mb);
        if a.kafka_brokers.is_some() {
            config.kafka.brokers = a.kafka_brokers;
        }
        if a.batch_index_sql.is_some() {
            config.indexes.batch_index_sql = a.batch_index_sql;
        }
        if a.final_index_sql.is_some() {
            config.indexes.final_index_sql = a.final_index_sql;
        }
        if a.merchant_daily_kpi_sql.is_some() {
            config.indexes.merchant_daily_kpi_sql = a.merchant_daily_kpi_sql;
        }
        set(
            &mut config.indexes.refresh_interval_secs,
            a.refresh_interval_secs,
        );
        set(&mut config.indexes.snapshot_retention, a.snapshot_retention);
        set(&mut config.kafka.topic, a.kafka_topic);
        set(&mut config.kafka.group_id, a.kafka_group_id);
        set(&mut config.kafka.max_record_bytes, a.kafka_max_record_bytes);
        set(
            &mut config.kafka.flush_interval_secs,
            a.kafka_flush_interval_secs,
        );
        set(&mut config.kafka.flush_rows, a.kafka_flush_rows);
        set(&mut config.kafka.assignment, a.kafka_assignment);
        if a.kafka_member.is_some() {
            config.kafka.member = a.kafka_member;
        }
        for entry in a.kafka_properties.unwrap_or_default() {
            let (key, value) = entry
                .split_once('=')
                .ok_or_else(|| ConfigError::KafkaProperty(entry.clone()))?;
            config
                .kafka
                .properties
                .insert(key.trim().to_owned(), value.trim().to_owned());
        }
        set(
            &mut config.kafka.max_unflushed_rows,
            a.kafka_max_unflushed_rows,
        );
        let rules = &mut config.rules;
        set(&mut rules.risk_threshold, a.risk_threshold);
        set(&mut rules.high_risk_words, a.high_risk_words);
        set(&mut rules.kyc_words, a.kyc_words);
        set(&mut rules.mask_keep, a.mask_keep);
        set(&mut rules.mask_char, a.mask_char);
        if let Some(entries) = a.kpi_multipliers {
            rules.kpi_multipliers = entries
                .iter()
                .map(|e| parse_multiplier(e))
                .collect::<Result<_, _>>()?;
        }
        let labels = &mut rules.labels;
        set(&mut labels.high_risk, a.label_high_risk);
        set(&mut labels.requires_kyc, a.label_requires_kyc);
        set(&mut labels.ok, a.label_ok);
        set(&mut labels.unknown, a.label_unknown);
        set(&mut labels.matched, a.label_matched);
        set(&mut labels.unmatched, a.label_unmatched);
        set(&mut labels.discrepancy, a.label_discrepancy);
        config.validate()?;
        Ok(config)
    }
}

impl Config {
    /// Checks the settings that only make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.auth.user.is_some() != self.auth.password.is_some() {
            return Err(ConfigError::AuthIncomplete);
        }
        for user in &self.auth.users {
            if argon2::PasswordHash::new(&user.password_hash).is_err() {
                return Err(ConfigError::PasswordHash(user.name.clone()));
            }
        }
        for addr in [self.flight_addr, self.http_addr] {
            if !self.auth.enabled() && !addr.ip().is_loopback() {
                return Err(ConfigError::AuthRequired(addr));
            }
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::TlsIncomplete);
        }
        if self.limits.max_concurrent_queries == 0 {
            return Err(ConfigError::NoQueries);
        }
        if self.indexes.snapshot_retention == 0 {
            return Err(ConfigError::NoSnapshots);
        }
        self.rules.validate()?;
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn parse_multiplier(entry: &str) -> Result<KpiMultiplier, ConfigError> {
    let bad = || ConfigError::KpiMultiplier(entry.to_owned());
    let (prefix, multiplier) = entry.rsplit_once('=').ok_or_else(bad)?;
    Ok(KpiMultiplier {
        prefix: prefix.to_owned(),
        multiplier: multiplier.trim().parse().map_err(|_| bad())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ConfigArgs,
    }

    fn parse(argv: &[&str]) -> ConfigArgs {
        Cli::try_parse_from(std::iter::once("recon").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn defaults_give_a_local_setup() {
        let c = parse(&[]).load().unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.flight_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.warehouse, "./recon-data");
    }

    #[test]
    fn flags_override_the_file() {
        let f = file(
            r#"
            warehouse = "s3://bucket/prefix"
            flight_addr = "127.0.0.1:6000"
            [rules]
            risk_threshold = 0.5
            [rules.labels]
            ok = "FINE"
            "#,
        );
        let path = f.path().to_str().unwrap();
        let c = parse(&[
            "--config",
            path,
            "--flight-addr",
            "127.0.0.1:7000",
            "--kyc-words",
            "kyc,aml",
        ])
        .load()
        .unwrap();
        assert_eq!(c.warehouse, "s3://bucket/prefix");
        assert_eq!(c.flight_addr.to_string(), "127.0.0.1:7000");
        assert_eq!(c.rules.risk_threshold, 0.5);
        assert_eq!(c.rules.labels.ok, "FINE");
        assert_eq!(c.rules.kyc_words, ["kyc", "aml"]);
    }

    #[test]
    fn kafka_group_settings() {
        let f = file(
            r#"
            [kafka]
            assignment = "group"
            [kafka.properties]
            "session.timeout.ms" = "6000"
            "#,
        );
        let path = f.path().to_str().unwrap();
        let c = parse(&[
            "--config",
            path,
            "--kafka-member",
            "east-1",
            "--kafka-properties",
            "heartbeat.interval.ms=1000, fetch.min.bytes = 1",
        ])
        .load()
        .unwrap();
        assert_eq!(c.kafka.assignment, Assignment::Group);
        assert_eq!(c.kafka.member.as_deref(), Some("east-1"));
        let properties: Vec<_> = c.kafka.properties.iter().collect();
        assert_eq!(
            properties,
            [
                (&"fetch.min.bytes".to_owned(), &"1".to_owned()),
                (&"heartbeat.interval.ms".to_owned(), &"1000".to_owned()),
                (&"session.timeout.ms".to_owned(), &"6000".to_owned()),
            ]
        );
        let c = parse(&["--kafka-assignment", "manual"]).load().unwrap();
        assert_eq!(c.kafka.assignment, Assignment::Manual);
        let err = parse(&["--kafka-properties", "debug"]).load().unwrap_err();
        assert!(err.to_string().contains("KEY=VALUE"), "{err}");
    }

    #[test]
    fn kpi_multipliers_flag() {
        let c = parse(&["--kpi-multipliers", "MCH-A=1.1,MCH-B=0.9"])
            .load()
            .unwrap();
        assert_eq!(c.rules.kpi_multipliers.len(), 2);
        assert_eq!(c.rules.kpi_multipliers[1].prefix, "MCH-B");
        assert_eq!(c.rules.kpi_multipliers[1].multiplier, 0.9);
        let err = parse(&["--kpi-multipliers", "MCH-A"]).load().unwrap_err();
        assert!(err.to_string().contains("PREFIX=NUMBER"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_rules_are_errors() {
        let f = file("flight_adr = \"127.0.0.1:1\"\n");
        let err = parse(&["--config", f.path().to_str().unwrap()])
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("flight_adr"), "{err}");
        let err = parse(&["--kyc-words", ""]).load().unwrap_err();
        assert!(err.to_string().contains("empty word"), "{err}");
        let err = parse(&["--config", "/nonexistent/recon.toml"])
            .load()
            .unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    }

    #[test]
    fn auth_is_required_beyond_loopback() {
        let err = parse(&["--flight-addr", "0.0.0.0:50051"])
            .load()
            .unwrap_err();
        assert!(matches!(err, ConfigError::AuthRequired(_)), "{err}");
        let err = parse(&["--http-addr", "0.0.0.0:8080"]).load().unwrap_err();
        assert!(matches!(err, ConfigError::AuthRequired(_)), "{err}");
        let c = parse(&[
            "--flight-addr",
            "0.0.0.0:50051",
            "--auth-user",
            "u",
            "--auth-password",
            "p",
        ])
        .load()
        .unwrap();
        assert_eq!(c.auth.user.as_deref(), Some("u"));
        let err = parse(&["--auth-user", "u"]).load().unwrap_err();
        assert!(matches!(err, ConfigError::AuthIncomplete), "{err}");
        let err = parse(&["--tls-cert", "c.pem"]).load().unwrap_err();
        assert!(matches!(err, ConfigError::TlsIncomplete), "{err}");
    }

    #[test]
    fn printed_config_reads_back() {
        let c = parse(&["--mask-char", "#", "--warehouse", "file:///tmp/w"])
            .load()
            .unwrap();
        let text = toml::to_string(&c).unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn every_flag_has_an_env_var_and_help() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        for arg in cmd.get_arguments().filter(|a| a.get_long().is_some()) {
            let id = arg.get_id().as_str();
            if id == "help" {
                continue;
            }
            assert!(arg.get_env().is_some(), "--{id} has no RECON_* env var");
            assert!(arg.get_help().is_some(), "--{id} has no help");
        }
    }
}
