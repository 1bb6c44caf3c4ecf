//! The seed's data set (`end_to_end_data_setup.py`) as seeded, reproducible
//! rows: merchants, transaction events, aggregator statements, policies and ML
//! fraud signals. Each kind draws from its own random stream (derived from the
//! one seed), so changing one count does not change the other kinds' rows.
//! Nothing here does I/O; [`super`] sends the rows where they belong.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema, SchemaRef};
use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How much to generate and how it relates (the seed's values are the defaults).
#[derive(Debug, Clone)]
pub struct Params {
    /// Merchants (seed: 10).
    pub merchants: usize,
    /// Transactions, one Kafka event each (seed: 50).
    pub transactions: usize,
    /// Share of transactions that get a later status-update event (seed: 0).
    pub status_updates: f64,
    /// Aggregator statements (seed: 30).
    pub statements: usize,
    /// Share of statements that reference a real transaction (seed: 0.8).
    pub match_prob: f64,
    /// Policies (seed: 5).
    pub policies: usize,
    /// ML fraud signals (seed: 15).
    pub signals: usize,
    /// Share of signals that reference a real transaction (seed: 0.9).
    pub fraud_match_prob: f64,
    /// The random seed (seed: 42).
    pub seed: u64,
    /// Events fall in the 30 days before this time.
    pub end_time: DateTime<Utc>,
}

const STATUSES: [&str; 4] = ["PENDING", "APPROVED", "DECLINED", "REFUNDED"];
const CURRENCIES: [&str; 4] = ["USD", "EUR", "GBP", "JPY"];
const RISK_LEVELS: [&str; 3] = ["LOW", "MEDIUM", "HIGH"];
const POLICY_TYPES: [&str; 4] = ["KYC", "AML", "REGIONAL_LIMIT", "BLACKLIST"];
const MODEL_VERSIONS: [&str; 3] = ["model_v1", "model_v2", "model_v3"];
const NAME_WORDS: [&str; 12] = [
    "Acme", "Blue", "Harbor", "Summit", "Pioneer", "Golden", "River", "Atlas", "Nova", "Cedar",
    "Vertex", "Orchid",
];
const NAME_SUFFIXES: [&str; 5] = ["Ltd", "LLC", "Inc", "GmbH", "and Sons"];
const RULE_WORDS: [&str; 16] = [
    "verify",
    "customer",
    "identity",
    "before",
    "settlement",
    "limit",
    "daily",
    "volume",
    "flag",
    "transfers",
    "above",
    "threshold",
    "review",
    "merchant",
    "region",
    "accounts",
];
/// Window the events fall in, before `end_time`.
const WINDOW_SECS: i64 = 30 * 24 * 3600;

/// One random stream per kind of row.
fn stream(seed: u64, kind: u64) -> StdRng {
    StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ kind)
}

/// A random (version 4) UUID string.
fn uuid(rng: &mut StdRng) -> String {
    let v: u128 = rng.random();
    let v = (v & !(0xF << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn pick<'a>(rng: &mut StdRng, values: &[&'a str]) -> &'a str {
    values[rng.random_range(0..values.len())]
}

/// Python's `round(x, 2)` is what the seed uses; for generated values the
/// nearest cent is all that matters.
fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn iso(t: DateTime<Utc>) -> String {
    // The seed's `datetime.utcnow().isoformat()`: no offset, microseconds.
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// The transactions' identities and the facts other rows refer to.
#[derive(Debug)]
pub struct Transactions {
    /// Transaction ids (UUIDs), in production order.
    pub ids: Vec<String>,
    /// Amount of each.
    pub amounts: Vec<f64>,
    /// Event time of each (first event).
    pub times: Vec<DateTime<Utc>>,
    /// Index into the merchants, user number, currency index, first status index.
    attributes: Vec<(u32, u16, u8, u8)>,
}

/// The whole data set, generated up front except the Kafka payloads, which
/// [`Dataset::events`] renders lazily.
#[derive(Debug)]
pub struct Dataset {
    params: Params,
    /// Merchant ids.
    pub merchant_ids: Vec<String>,
    /// What the transactions are.
    pub transactions: Transactions,
}

impl Dataset {
    /// Draws the merchants and the transactions' ids, amounts and times.
    pub fn new(params: Params) -> Self {
        let mut rng = stream(params.seed, 1);
        // "MCH-" + a letter + a number: unique, and about 1 in 26 starts with
        // MCH-A (the KPI function's multiplier prefix).
        let merchant_ids = (0..params.merchants.max(1))
            .map(|i| {
                let letter = char::from(b'A' + rng.random_range(0..26u8));
                format!("MCH-{letter}{i:03}")
            })
            .collect();
        let mut rng = stream(params.seed, 2);
        let n = params.transactions;
        let ids = (0..n).map(|_| uuid(&mut rng)).collect();
        let amounts = (0..n)
            .map(|_| cents(rng.random_range(5.0..1500.0)))
            .collect();
        let start = params.end_time - Duration::seconds(WINDOW_SECS);
        let times = (0..n)
            .map(|_| start + Duration::microseconds(rng.random_range(0..WINDOW_SECS * 1_000_000)))
            .collect();
        let merchants = params.merchants.max(1) as u32;
        let attributes = (0..n)
            .map(|_| {
                (
                    rng.random_range(0..merchants),
                    rng.random_range(0..10_000),
                    rng.random_range(0..CURRENCIES.len() as u8),
                    rng.random_range(0..STATUSES.len() as u8),
                )
            })
            .collect();
        Self {
            params,
            merchant_ids,
            transactions: Transactions {
                ids,
                amounts,
                times,
                attributes,
            },
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Number of Kafka events: one per transaction plus the status updates.
    pub fn event_count(&self) -> usize {
        let mut rng = stream(self.params.seed, 3);
        (0..self.params.transactions)
            .filter(|_| rng.random_bool(self.params.status_updates.clamp(0.0, 1.0)))
            .count()
            + self.params.transactions
    }

    /// Kafka events as (key, JSON value): every transaction's first event in
    /// order, then the status updates (the same transaction later, with a new
    /// status), as a payment system would emit them.
    pub fn events(&self) -> impl Iterator<Item = (String, String)> + '_ {
        let firsts = (0..self.params.transactions).map(|i| {
            let status = STATUSES[usize::from(self.transactions.attributes[i].3)];
            self.event(i, status, self.transactions.times[i])
        });
        let mut pick_rng = stream(self.params.seed, 3);
        let mut rng = stream(self.params.seed, 5);
        let share = self.params.status_updates.clamp(0.0, 1.0);
        let updates = (0..self.params.transactions)
            .filter(move |_| pick_rng.random_bool(share))
            .map(move |i| {
                let status = pick(&mut rng, &["APPROVED", "DECLINED", "REFUNDED"]);
                let later =
                    self.transactions.times[i] + Duration::seconds(rng.random_range(1..3600));
                self.event(i, status, later)
            });
        firsts.chain(updates)
    }

    fn event(&self, i: usize, status: &str, time: DateTime<Utc>) -> (String, String) {
        let id = &self.transactions.ids[i];
        let (merchant, user, currency, _) = self.transactions.attributes[i];
        let value = serde_json::json!({
            "transaction_id": id,
            "merchant_id": self.merchant_ids[merchant as usize],
            "user_id": format!("USR-{user:04}"),
            "amount": self.transactions.amounts[i],
            "currency": CURRENCIES[usize::from(currency)],
            "status": status,
            "event_time": iso(time),
        });
        (id.clone(), value.to_string())
    }

    /// The merchants table.
    pub fn merchants(&self) -> RecordBatch {
        let mut rng = stream(self.params.seed, 6);
        let n = self.merchant_ids.len();
        let names: Vec<String> = (0..n)
            .map(|_| {
                format!(
                    "{} {} {}",
                    pick(&mut rng, &NAME_WORDS),
                    pick(&mut rng, &NAME_WORDS),
                    pick(&mut rng, &NAME_SUFFIXES)
                )
            })
            .collect();
        let risk: Vec<&str> = (0..n).map(|_| pick(&mut rng, &RISK_LEVELS)).collect();
        let onboarded: Vec<String> = (0..n)
            .map(|_| {
                let days = rng.random_range(0..730);
                (self.params.end_time - Duration::days(days))
                    .format("%Y-%m-%d")
                    .to_string()
            })
            .collect();
        batch(vec![
            (
                "merchant_id",
                utf8(self.merchant_ids.iter().map(|s| Some(s.as_str()))),
            ),
            (
                "merchant_name",
                utf8(names.iter().map(|s| Some(s.as_str()))),
            ),
            ("risk_level", utf8(risk.iter().map(|s| Some(*s)))),
            (
                "onboarding_date",
                utf8(onboarded.iter().map(|s| Some(s.as_str()))),
            ),
        ])
    }

    /// Aggregator statements for rows `from..to` of the statement sequence
    /// (call in chunks for large counts; chunks are independent of chunking).
    /// Matched statements post the transaction's amount, usually exactly,
    /// sometimes a few cents off, rarely several units off; unmatched ones
    /// reference a transaction id that does not exist.
    pub fn statements(&self, from: usize, to: usize) -> RecordBatch {
        let mut ids = Vec::with_capacity(to - from);
        let mut tx_ids = Vec::with_capacity(to - from);
        let mut dates = Vec::with_capacity(to - from);
        let mut posted = Vec::with_capacity(to - from);
        let mut fees = Vec::with_capacity(to - from);
        for k in from..to {
            let mut rng = stream(self.params.seed ^ ((k as u64) << 8), 7);
            ids.push(format!("STMT-{}", &uuid(&mut rng)[..8]));
            let n = self.transactions.ids.len();
            let (tx, amount, day) = if n > 0 && rng.random_bool(self.params.match_prob) {
                let i = rng.random_range(0..n);
                let delta = match rng.random_range(0..10) {
                    0..=6 => 0.0,
                    7 | 8 => f64::from(rng.random_range(-50..=50)) / 100.0,
                    _ => f64::from(rng.random_range(-2000..=2000)) / 100.0,
                };
                let posting = self.transactions.times[i] + Duration::days(rng.random_range(0..3));
                (
                    self.transactions.ids[i].clone(),
                    cents((self.transactions.amounts[i] + delta).max(0.0)),
                    posting,
                )
            } else {
                let back = Duration::seconds(rng.random_range(0..WINDOW_SECS));
                (
                    uuid(&mut rng),
                    cents(rng.random_range(5.0..1500.0)),
                    self.params.end_time - back,
                )
            };
            fees.push(cents(amount * rng.random_range(0.005..0.03)));
            tx_ids.push(tx);
            posted.push(amount);
            dates.push(day.format("%Y-%m-%d").to_string());
        }
        batch(vec![
            ("statement_id", utf8(ids.iter().map(|s| Some(s.as_str())))),
            (
                "transaction_id",
                utf8(tx_ids.iter().map(|s| Some(s.as_str()))),
            ),
            ("posting_date", utf8(dates.iter().map(|s| Some(s.as_str())))),
            ("amount_posted", Arc::new(Float64Array::from(posted))),
            ("fee_charged", Arc::new(Float64Array::from(fees))),
        ])
    }

    /// The policy table: the seed's policy types, random active flags; a
    /// BLACKLIST policy names one merchant (a global one would flag every
    /// transaction HIGH_RISK), the others apply to every merchant
    /// (`merchant_id` NULL) two times in three.
    pub fn policies(&self) -> RecordBatch {
        let mut rng = stream(self.params.seed, 8);
        let n = self.params.policies;
        let mut ids = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut rules = Vec::with_capacity(n);
        let mut active = Vec::with_capacity(n);
        let mut merchants = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(format!("POL-{}", &uuid(&mut rng)[..8]));
            types.push(pick(&mut rng, &POLICY_TYPES));
            let words: Vec<&str> = (0..8).map(|_| pick(&mut rng, &RULE_WORDS)).collect();
            rules.push(format!("{}.", capitalise(&words.join(" "))));
            active.push(rng.random_bool(0.5));
            // A blacklist names a merchant; other rules are global two times in three.
            let own = types.last() == Some(&"BLACKLIST") || rng.random_bool(1.0 / 3.0);
            merchants.push(own.then(|| pick_owned(&mut rng, &self.merchant_ids)));
        }
        batch(vec![
            ("policy_id", utf8(ids.iter().map(|s| Some(s.as_str())))),
            ("policy_type", utf8(types.iter().map(|s| Some(*s)))),
            (
                "rule_description",
                utf8(rules.iter().map(|s| Some(s.as_str()))),
            ),
            ("active_flag", Arc::new(BooleanArray::from(active))),
            ("merchant_id", utf8(merchants.iter().map(|s| s.as_deref()))),
        ])
    }

    /// ML fraud signals `from..to` as JSON objects (what the seed POSTs).
    pub fn signals(&self, from: usize, to: usize) -> Vec<serde_json::Value> {
        (from..to)
            .map(|k| {
                let mut rng = stream(self.params.seed ^ ((k as u64) << 8), 9);
                let n = self.transactions.ids.len();
                let (tx, time) = if n > 0 && rng.random_bool(self.params.fraud_match_prob) {
                    let i = rng.random_range(0..n);
                    let after = Duration::milliseconds(rng.random_range(10..5_000));
                    (
                        self.transactions.ids[i].clone(),
                        self.transactions.times[i] + after,
                    )
                } else {
                    (uuid(&mut rng), self.params.end_time)
                };
                serde_json::json!({
                    "fraud_signal_id": uuid(&mut rng),
                    "transaction_id": tx,
                    "fraud_score": (rng.random_range(0.0..1.0f64) * 10_000.0).round() / 10_000.0,
                    "model_version": pick(&mut rng, &MODEL_VERSIONS),
                    "inference_time": iso(time),
                })
            })
            .collect()
    }
}

fn pick_owned(rng: &mut StdRng, values: &[String]) -> String {
    values[rng.random_range(0..values.len())].clone()
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn utf8<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
        .collect();
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    RecordBatch::try_new(schema, columns.into_iter().map(|(_, a)| a).collect())
        .expect("columns built with equal lengths")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(seed: u64) -> Params {
        Params {
            merchants: 10,
            transactions: 2_000,
            status_updates: 0.1,
            statements: 1_000,
            match_prob: 0.8,
            policies: 5,
            signals: 1_000,
            fraud_match_prob: 0.9,
            seed,
            end_time: "2025-01-19T00:00:00Z".parse().expect("time"),
        }
    }

    #[test]
    fn same_seed_same_rows_other_seed_other_rows() {
        let a = Dataset::new(params(42));
        let b = Dataset::new(params(42));
        let c = Dataset::new(params(43));
        assert_eq!(
            a.events().collect::<Vec<_>>(),
            b.events().collect::<Vec<_>>()
        );
        assert_eq!(a.statements(0, 100), b.statements(0, 100));
        assert_eq!(a.signals(0, 50), b.signals(0, 50));
        assert_ne!(a.transactions.ids, c.transactions.ids);
    }

    #[test]
    fn chunks_do_not_change_rows() {
        let d = Dataset::new(params(7));
        let whole = d.statements(0, 10);
        let parts = arrow::compute::concat_batches(
            &whole.schema(),
            &[d.statements(0, 4), d.statements(4, 10)],
        )
        .expect("concat");
        assert_eq!(whole, parts);
    }

    #[test]
    fn ratios_follow_the_parameters() {
        let d = Dataset::new(params(1));
        let known: std::collections::HashSet<&str> =
            d.transactions.ids.iter().map(String::as_str).collect();
        let statements = d.statements(0, 1_000);
        let tx = statements
            .column_by_name("transaction_id")
            .expect("column")
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("strings");
        let matched = tx.iter().flatten().filter(|id| known.contains(id)).count();
        assert!((740..=860).contains(&matched), "{matched}");
        let signals = d.signals(0, 1_000);
        let matched = signals
            .iter()
            .filter(|s| known.contains(s["transaction_id"].as_str().expect("id")))
            .count();
        assert!((860..=940).contains(&matched), "{matched}");
        let events = d.events().count();
        assert_eq!(events, d.event_count());
        assert!((2_150..=2_250).contains(&events), "{events}");
    }

    #[test]
    fn uuids_look_like_version_4() {
        let id = uuid(&mut stream(1, 1));
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
    }
}
