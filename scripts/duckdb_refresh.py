"""The peer of recon's full refresh in the refresh benchmark: DuckDB computes
the three index views (DESIGN §4, the same SQL as server/sql/*.sql, the five
functions as SQL macros with the seed's default rules) from the same Parquet
files and writes each to Parquet (zstd level 1, as recon). Prints one JSON
object: seconds per view and rows written.

usage: duckdb_refresh.py WAREHOUSE OUT_DIR [THREADS]
"""

import json
import os
import sys
import time

import duckdb

MACROS = """
CREATE MACRO calc_discrepancy(a, p) AS
    CASE WHEN a IS NULL OR p IS NULL THEN 0.0 ELSE round(p - a, 2) END;
CREATE MACRO flag_compliance(score, flags) AS
    CASE WHEN coalesce(score, 0.0) > 0.8 OR contains(upper(coalesce(flags, '')), 'BLACKLIST') THEN 'HIGH_RISK'
         WHEN contains(upper(coalesce(flags, '')), 'KYC') THEN 'REQUIRES_KYC'
         ELSE 'OK' END;
CREATE MACRO mask_sensitive(u) AS
    CASE WHEN u IS NULL OR u = '' THEN ''
         WHEN length(u) <= 2 THEN u
         ELSE left(u, 2) || repeat('*', length(u) - 2) END;
CREATE MACRO derive_status(cur, bank) AS
    CASE WHEN bank IS NULL OR bank = '' THEN coalesce(nullif(cur, ''), 'UNKNOWN')
         WHEN upper(bank) = 'MATCHED' THEN coalesce(nullif(cur, ''), 'MATCHED')
         WHEN upper(bank) = 'UNMATCHED' THEN 'DISCREPANCY'
         ELSE coalesce(nullif(cur, ''), bank) END;
CREATE MACRO kpi_calculation(m, v) AS
    CASE WHEN v IS NULL THEN 0.0
         WHEN starts_with(m, 'MCH-A') THEN round(v * 1.1, 2)
         ELSE round(v, 2) END;
"""

VIEWS = """
CREATE VIEW transactions AS SELECT * FROM read_parquet('{w}/output/partial_stream_index/*.parquet');
CREATE VIEW aggregator_statements AS SELECT * FROM read_parquet('{w}/batch_parquet_data/aggregator_statements.parquet/*.parquet');
CREATE VIEW ml_fraud_signals AS SELECT * FROM read_parquet('{w}/batch_parquet_data/ml_fraud_signals.parquet/*.parquet');
CREATE VIEW policy_data AS SELECT * FROM read_parquet('{w}/batch_parquet_data/policy_data.parquet');
CREATE VIEW transactions_latest AS
    SELECT transaction_id, merchant_id, user_id, amount, currency, status, event_time,
           processed_at, kafka_partition, kafka_offset
    FROM transactions
    QUALIFY row_number() OVER (PARTITION BY transaction_id
        ORDER BY event_time DESC, kafka_partition DESC, kafka_offset DESC) = 1;
CREATE VIEW batch_index AS
SELECT t.transaction_id, t.merchant_id, t.user_id, t.amount, t.currency, t.status,
       s.statement_id, s.posting_date, s.amount_posted, s.fee_charged,
       calc_discrepancy(t.amount, s.amount_posted) AS discrepancy,
       CASE WHEN s.statement_id IS NULL THEN 'UNMATCHED' ELSE 'MATCHED' END AS reconciliation_status,
       now() AS batch_run_timestamp
FROM transactions_latest t
LEFT JOIN aggregator_statements s ON s.transaction_id = t.transaction_id;
CREATE VIEW final_index AS
WITH merchants_in_use AS (SELECT DISTINCT merchant_id FROM transactions_latest),
policy AS (
    SELECT mi.merchant_id,
           array_to_string(list_sort(list_distinct(list(p.policy_type))), ',') AS policy_flags
    FROM merchants_in_use mi
    JOIN policy_data p ON p.active_flag AND (p.merchant_id = mi.merchant_id OR p.merchant_id IS NULL)
    WHERE p.policy_type IS NOT NULL
    GROUP BY mi.merchant_id
)
SELECT b.transaction_id, b.merchant_id, b.user_id, b.amount, b.currency, b.status,
       b.discrepancy, b.reconciliation_status, m.fraud_signal_id, m.fraud_score,
       m.inference_time, pf.policy_flags,
       flag_compliance(m.fraud_score, pf.policy_flags) AS risk_label,
       mask_sensitive(b.user_id) AS masked_user,
       derive_status(b.status, b.reconciliation_status) AS final_status,
       t.processed_at, now() AS final_index_ts
FROM batch_index b
LEFT JOIN ml_fraud_signals m ON m.transaction_id = b.transaction_id
LEFT JOIN policy pf ON pf.merchant_id = b.merchant_id
LEFT JOIN transactions_latest t ON t.transaction_id = b.transaction_id;
CREATE VIEW merchant_daily_kpi AS
WITH per_transaction AS (
    SELECT transaction_id, bool_or(statement_id IS NOT NULL) AS matched,
           sum(discrepancy) AS discrepancy
    FROM batch_index GROUP BY transaction_id
)
SELECT t.merchant_id, CAST(t.event_time AS DATE) AS day, count(*) AS tx_count,
       sum(t.amount) AS daily_value,
       count(*) FILTER (WHERE NOT b.matched) AS unmatched_count,
       sum(b.discrepancy) AS total_discrepancy,
       kpi_calculation(t.merchant_id, sum(t.amount)) AS merchant_kpi
FROM transactions_latest t
JOIN per_transaction b ON b.transaction_id = t.transaction_id
GROUP BY t.merchant_id, CAST(t.event_time AS DATE);
"""


def main():
    warehouse, out = sys.argv[1], sys.argv[2]
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else os.cpu_count()
    os.makedirs(out, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(MACROS)
    con.execute(VIEWS.format(w=warehouse))
    result = {}
    for view in ["batch_index", "final_index", "merchant_daily_kpi"]:
        target = os.path.join(out, f"{view}.parquet")
        started = time.perf_counter()
        con.execute(
            f"COPY (SELECT * FROM {view}) TO '{target}' "
            "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)"
        )
        seconds = time.perf_counter() - started
        rows = con.execute(f"SELECT count(*) FROM read_parquet('{target}')").fetchone()[0]
        result[view] = {"seconds": seconds, "rows": rows}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
