-- batch_index (DESIGN §4; the seed's batch_reconciliation.py): every latest
-- transaction event joined with its statements — one row per statement, or one
-- row with NULL statement columns when there is none.
CREATE VIEW batch_index AS
SELECT
    t.transaction_id,
    t.merchant_id,
    t.user_id,
    t.amount,
    t.currency,
    t.status,
    s.statement_id,
    s.posting_date,
    s.amount_posted,
    s.fee_charged,
    calc_discrepancy(t.amount, s.amount_posted) AS discrepancy,
    CASE WHEN s.statement_id IS NULL THEN 'UNMATCHED' ELSE 'MATCHED' END AS reconciliation_status,
    now() AS batch_run_timestamp
FROM transactions_latest t
LEFT JOIN aggregator_statements s ON s.transaction_id = t.transaction_id
