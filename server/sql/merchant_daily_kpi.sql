-- merchant_daily_kpi (DESIGN §4): per merchant and UTC day of event_time, over
-- the latest event of each transaction.
CREATE VIEW merchant_daily_kpi AS
WITH per_transaction AS (
    SELECT
        transaction_id,
        bool_or(statement_id IS NOT NULL) AS matched,
        sum(discrepancy) AS discrepancy
    FROM batch_index
    GROUP BY transaction_id
)
SELECT
    t.merchant_id,
    CAST(t.event_time AS DATE) AS day,
    count(*) AS tx_count,
    sum(t.amount) AS daily_value,
    count(*) FILTER (WHERE NOT b.matched) AS unmatched_count,
    sum(b.discrepancy) AS total_discrepancy,
    kpi_calculation(t.merchant_id, sum(t.amount)) AS merchant_kpi
FROM transactions_latest t
JOIN per_transaction b ON b.transaction_id = t.transaction_id
GROUP BY t.merchant_id, CAST(t.event_time AS DATE)
