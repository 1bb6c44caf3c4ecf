-- final_index (DESIGN §4; the seed's final_index_pipeline.py plus the UDF
-- columns of its usage example): batch_index with ML fraud signals, the active
-- policy types that apply to the merchant (its own or merchant_id NULL; sorted,
-- distinct, comma-joined; NULL when none), and the derived labels.
CREATE VIEW final_index AS
-- Policy types apply to the merchant named in them, and those without a
-- merchant to every merchant: the flags of a merchant with policies of its
-- own merge both lists; every other merchant has the global list (NULL when
-- it is empty). Both come from policy_data alone, so the planner sees two
-- small inputs (no pass over the transactions to list the merchants in use).
WITH own_types AS (
    SELECT merchant_id, array_agg(DISTINCT policy_type) AS types
    FROM policy_data
    WHERE active_flag AND policy_type IS NOT NULL AND merchant_id IS NOT NULL
    GROUP BY merchant_id
),
global_types AS (
    SELECT array_agg(DISTINCT policy_type) AS types
    FROM policy_data
    WHERE active_flag AND policy_type IS NOT NULL AND merchant_id IS NULL
),
policy AS (
    SELECT
        o.merchant_id,
        array_to_string(array_sort(array_distinct(
            array_concat(o.types, coalesce(g.types, o.types))
        )), ',') AS policy_flags
    FROM own_types o CROSS JOIN global_types g
),
global_policy AS (
    SELECT array_to_string(array_sort(types), ',') AS policy_flags FROM global_types
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
    coalesce(pf.policy_flags, gp.policy_flags) AS policy_flags,
    flag_compliance(m.fraud_score, coalesce(pf.policy_flags, gp.policy_flags)) AS risk_label,
    mask_sensitive(b.user_id) AS masked_user,
    derive_status(b.status, b.reconciliation_status) AS final_status,
    t.processed_at,
    now() AS final_index_ts
-- Every row of batch_index, left-joined with the signals, the policy flags
-- and the latest event's processed_at; written as RIGHT JOINs so that each
-- join builds its hash table on the small or narrow side (the merchants'
-- flags, two columns of the latest events) and streams batch_index through
-- it, the planner having no row counts for those sides to choose by. (The
-- join for processed_at is not run as a join: the plan carries processed_at
-- up from batch_index's own scan of transactions_latest, see keyed_join.rs.)
FROM transactions_latest t
RIGHT JOIN (
    policy pf
    RIGHT JOIN (
        ml_fraud_signals m
        RIGHT JOIN batch_index b ON m.transaction_id = b.transaction_id
    ) ON pf.merchant_id = b.merchant_id
) ON t.transaction_id = b.transaction_id
CROSS JOIN global_policy gp
