-- final_index (DESIGN §4; the seed's final_index_pipeline.py plus the UDF
-- columns of its usage example): batch_index with ML fraud signals, the active
-- policy types that apply to the merchant (its own or merchant_id NULL; sorted,
-- distinct, comma-joined; NULL when none), and the derived labels.
CREATE VIEW final_index AS
WITH merchants_in_use AS (
    SELECT DISTINCT merchant_id FROM transactions_latest
),
policy AS (
    SELECT
        mi.merchant_id,
        array_to_string(array_sort(array_distinct(array_agg(p.policy_type))), ',') AS policy_flags
    FROM merchants_in_use mi
    JOIN policy_data p
      ON p.active_flag AND (p.merchant_id = mi.merchant_id OR p.merchant_id IS NULL)
    WHERE p.policy_type IS NOT NULL
    GROUP BY mi.merchant_id
)
SELECT
    b.transaction_id,
    b.merchant_id,
    b.user_id,
    b.amount,
    b.currency,
    b.status,
    b.discrepancy,
    b.reconciliation_status,
    m.fraud_signal_id,
    m.fraud_score,
    m.inference_time,
    pf.policy_flags,
    flag_compliance(m.fraud_score, pf.policy_flags) AS risk_label,
    mask_sensitive(b.user_id) AS masked_user,
    derive_status(b.status, b.reconciliation_status) AS final_status,
    t.processed_at,
    now() AS final_index_ts
-- Every row of batch_index, left-joined with the signals, the policy flags
-- and the latest event's processed_at; written as RIGHT JOINs so that each
-- join builds its hash table on the small or narrow side (200 merchants'
-- flags, two columns of the latest events) and streams batch_index through
-- it, the planner having no row counts for those sides to choose by.
FROM transactions_latest t
RIGHT JOIN (
    policy pf
    RIGHT JOIN (
        ml_fraud_signals m
        RIGHT JOIN batch_index b ON m.transaction_id = b.transaction_id
    ) ON pf.merchant_id = b.merchant_id
) ON t.transaction_id = b.transaction_id
