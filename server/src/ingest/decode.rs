//! Kafka records → Arrow (DESIGN §2, §5). A batch of raw records becomes one
//! `transactions` batch and one `transactions_rejects` batch.
//!
//! Each record's JSON is parsed into a typed, borrowing struct (no
//! `serde_json::Value`, no per-field allocation) and appended straight to the
//! column builders. A record that is not UTF-8 JSON, lacks a required field, has a
//! wrong type, an unknown status, a bad timestamp, or is larger than the limit
//! becomes a reject row carrying its bytes and the reason; the batch goes on.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use chrono::{DateTime, NaiveDateTime};
use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, Float64Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

/// Statuses a transaction event may carry.
pub const STATUSES: [&str; 4] = ["PENDING", "APPROVED", "DECLINED", "REFUNDED"];

/// The column both ingest tables carry the Kafka partition in.
pub const PARTITION_COLUMN: &str = "kafka_partition";
/// The column both ingest tables carry the Kafka offset in.
pub const OFFSET_COLUMN: &str = "kafka_offset";

/// The type of every ingest timestamp: microseconds, UTC.
pub fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Schema of `transactions`: the seed's columns, then ingest metadata.
pub static TRANSACTIONS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("transaction_id", DataType::Utf8, false),
        Field::new("merchant_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, false),
        Field::new("currency", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("event_time", timestamp(), false),
        Field::new("processed_at", timestamp(), false),
        Field::new(PARTITION_COLUMN, DataType::Int32, false),
        Field::new(OFFSET_COLUMN, DataType::Int64, false),
    ]))
});

/// Schema of `transactions_rejects`.
pub static REJECTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(PARTITION_COLUMN, DataType::Int32, false),
        Field::new(OFFSET_COLUMN, DataType::Int64, false),
        Field::new("key", DataType::Utf8, true),
        Field::new("payload", DataType::Binary, true),
        Field::new("error", DataType::Utf8, false),
        Field::new("received_at", timestamp(), false),
    ]))
});

/// One Kafka record as the consumer hands it over.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Message key (the transaction id by contract).
    pub key: Option<&'a [u8]>,
    /// Message value (one JSON object by contract).
    pub payload: Option<&'a [u8]>,
}

#[derive(Deserialize)]
struct TxEvent<'a> {
    #[serde(borrow)]
    transaction_id: Cow<'a, str>,
    #[serde(borrow)]
    merchant_id: Cow<'a, str>,
    #[serde(borrow, default)]
    user_id: Option<Cow<'a, str>>,
    amount: f64,
    #[serde(borrow, default)]
    currency: Option<Cow<'a, str>>,
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow)]
    event_time: Cow<'a, str>,
}

/// Parses an ISO-8601 time; without an offset it is UTC. Returns µs since the epoch.
pub fn parse_event_time(text: &str) -> Result<i64, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_micros());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc().timestamp_micros());
        }
    }
    Err(format!("event_time {text:?} is not an ISO-8601 timestamp"))
}

/// Column builders of both outputs.
#[derive(Debug)]
pub struct Decoder {
    max_record_bytes: usize,
    transaction_id: StringBuilder,
    merchant_id: StringBuilder,
    user_id: StringBuilder,
    amount: Float64Builder,
    currency: StringBuilder,
    status: StringBuilder,
    event_time: TimestampMicrosecondBuilder,
    processed_at: TimestampMicrosecondBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    rejects: Rejects,
}

#[derive(Debug, Default)]
struct Rejects {
    partition: Int32Builder,
    offset: Int64Builder,
    key: StringBuilder,
    payload: BinaryBuilder,
    error: StringBuilder,
    received_at: TimestampMicrosecondBuilder,
}

/// The result of decoding one batch of records.
#[derive(Debug)]
pub struct Decoded {
    /// Good events, as `transactions` rows.
    pub transactions: RecordBatch,
    /// Bad records, as `transactions_rejects` rows.
    pub rejects: RecordBatch,
}

impl Decoder {
    /// A decoder refusing records larger than `max_record_bytes`.
    pub fn new(max_record_bytes: usize) -> Self {
        Self {
            max_record_bytes,
            transaction_id: StringBuilder::new(),
            merchant_id: StringBuilder::new(),
            user_id: StringBuilder::new(),
            amount: Float64Builder::new(),
            currency: StringBuilder::new(),
            status: StringBuilder::new(),
            event_time: TimestampMicrosecondBuilder::new(),
            processed_at: TimestampMicrosecondBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            rejects: Rejects::default(),
        }
    }

    /// Decodes one record into the builders (a good row or a reject row).
    pub fn push(&mut self, record: &RawRecord<'_>, now_micros: i64) {
        if let Err(reason) = self.try_push(record, now_micros) {
            let r = &mut self.rejects;
            r.partition.append_value(record.partition);
            r.offset.append_value(record.offset);
            r.key
                .append_option(record.key.map(|k| String::from_utf8_lossy(k)));
            r.payload.append_option(record.payload);
            r.error.append_value(reason);
            r.received_at.append_value(now_micros);
        }
    }

    fn try_push(&mut self, record: &RawRecord<'_>, now_micros: i64) -> Result<(), String> {
        let payload = record.payload.ok_or("empty message (no value)")?;
        if payload.len() > self.max_record_bytes {
            return Err(format!(
                "record of {} bytes exceeds the limit of {} bytes",
                payload.len(),
                self.max_record_bytes
            ));
        }
        let text = std::str::from_utf8(payload).map_err(|e| format!("value is not UTF-8: {e}"))?;
        let event: TxEvent<'_> =
            serde_json::from_str(text).map_err(|e| format!("invalid transaction JSON: {e}"))?;
        if !STATUSES.contains(&event.status.as_ref()) {
            return Err(format!(
                "status {:?} is not one of {}",
                event.status,
                STATUSES.join(", ")
            ));
        }
        if event.transaction_id.is_empty() {
            return Err("transaction_id is empty".into());
        }
        let event_time = parse_event_time(&event.event_time)?;
        self.transaction_id.append_value(&event.transaction_id);
        self.merchant_id.append_value(&event.merchant_id);
        self.user_id.append_option(event.user_id.as_deref());
        self.amount.append_value(event.amount);
        self.currency.append_option(event.currency.as_deref());
        self.status.append_value(&event.status);
        self.event_time.append_value(event_time);
        self.processed_at.append_value(now_micros);
        self.partition.append_value(record.partition);
        self.offset.append_value(record.offset);
        Ok(())
    }

    /// Finishes the batches decoded so far and resets the builders.
    pub fn finish(&mut self) -> Decoded {
        let utc = |b: &mut TimestampMicrosecondBuilder| -> ArrayRef {
            Arc::new(b.finish().with_timezone("UTC"))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.transaction_id.finish()),
            Arc::new(self.merchant_id.finish()),
            Arc::new(self.user_id.finish()),
            Arc::new(self.amount.finish()),
            Arc::new(self.currency.finish()),
            Arc::new(self.status.finish()),
            utc(&mut self.event_time),
            utc(&mut self.processed_at),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
        ];
        let r = &mut self.rejects;
        let rejects: Vec<ArrayRef> = vec![
            Arc::new(r.partition.finish()),
            Arc::new(r.offset.finish()),
            Arc::new(r.key.finish()),
            Arc::new(r.payload.finish()),
            Arc::new(r.error.finish()),
            utc(&mut r.received_at),
        ];
        Decoded {
            transactions: RecordBatch::try_new(Arc::clone(&TRANSACTIONS_SCHEMA), columns)
                .expect("builders match the transactions schema"),
            rejects: RecordBatch::try_new(Arc::clone(&REJECTS_SCHEMA), rejects)
                .expect("builders match the rejects schema"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::TimestampMicrosecondType;

    fn record(offset: i64, payload: &[u8]) -> RawRecord<'_> {
        RawRecord {
            partition: 0,
            offset,
            key: Some(b"k"),
            payload: Some(payload),
        }
    }

    const GOOD: &[u8] = br#"{"transaction_id": "T-1", "merchant_id": "MCH-A1", "user_id": "USR-1", "amount": 12.5, "currency": "EUR", "status": "APPROVED", "event_time": "2026-11-24T10:00:00.250000"}"#;

    #[test]
    fn good_and_bad_records_split() {
        let mut d = Decoder::new(1024);
        let cases: Vec<(&[u8], &str)> = vec![
            (b"{not json", "invalid transaction JSON"),
            (b"\xff\xfe", "not UTF-8"),
            (br#"{"transaction_id": "T-2"}"#, "missing field"),
            (
                br#"{"transaction_id": "T-3", "merchant_id": "M", "amount": "12", "status": "PENDING", "event_time": "2026-11-24T10:00:00"}"#,
                "invalid type",
            ),
            (
                br#"{"transaction_id": "T-4", "merchant_id": "M", "amount": 1, "status": "LOST", "event_time": "2026-11-24T10:00:00"}"#,
                "is not one of",
            ),
            (
                br#"{"transaction_id": "T-5", "merchant_id": "M", "amount": 1, "status": "PENDING", "event_time": "yesterday"}"#,
                "not an ISO-8601",
            ),
            (&[b' '; 2000], "exceeds the limit"),
        ];
        d.push(&record(0, GOOD), 7);
        for (i, (payload, _)) in cases.iter().enumerate() {
            d.push(&record(i as i64 + 1, payload), 7);
        }
        d.push(
            &RawRecord {
                partition: 0,
                offset: 99,
                key: None,
                payload: None,
            },
            7,
        );
        let out = d.finish();
        assert_eq!(out.transactions.num_rows(), 1);
        assert_eq!(out.rejects.num_rows(), cases.len() + 1);
        let errors = out.rejects.column(4).as_string::<i32>();
        for (i, (_, reason)) in cases.iter().enumerate() {
            assert!(
                errors.value(i).contains(reason),
                "{}: {}",
                reason,
                errors.value(i)
            );
        }
        assert!(errors.value(cases.len()).contains("empty message"));
        let event_time = out
            .transactions
            .column(6)
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(
            event_time.value(0),
            parse_event_time("2026-11-24T10:00:00.25Z").unwrap()
        );
        // The builders start over after finish.
        assert_eq!(d.finish().transactions.num_rows(), 0);
        assert!(out.rejects.column(3).is_valid(0));
    }

    #[test]
    fn event_times_without_offset_are_utc() {
        let utc = parse_event_time("2026-11-24T10:00:00").unwrap();
        assert_eq!(parse_event_time("2026-11-24T10:00:00Z").unwrap(), utc);
        assert_eq!(parse_event_time("2026-11-24T11:00:00+01:00").unwrap(), utc);
        assert_eq!(parse_event_time("2026-11-24 10:00:00").unwrap(), utc);
    }
}
