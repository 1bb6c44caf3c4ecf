"""The reference: the seed's five pure-Python UDF functions, verbatim in logic.

These are the functions of the seed's `udf_library.py` (DESIGN §3 says their
behaviour is the default of recon's SQL functions). The fidelity test runs
them with CPython to produce the expected outputs.
"""


def calc_discrepancy_py(amount, amount_posted):
    if amount is None or amount_posted is None:
        return 0.0
    return round(amount_posted - amount, 2)


def flag_compliance_py(fraud_score, policy_flags):
    if fraud_score is None:
        fraud_score = 0.0
    flags = policy_flags.upper() if policy_flags else ""
    if fraud_score > 0.8 or "BLACKLIST" in flags:
        return "HIGH_RISK"
    elif "KYC" in flags:
        return "REQUIRES_KYC"
    else:
        return "OK"


def mask_sensitive_py(user_id):
    if not user_id:
        return ""
    return user_id[:2] + "*" * (len(user_id) - 2)


def derive_status_py(cur_status, bank_status):
    if not bank_status:
        return cur_status if cur_status else "UNKNOWN"
    bank_status_upper = bank_status.upper()
    if bank_status_upper == "MATCHED":
        return cur_status if cur_status else "MATCHED"
    elif bank_status_upper == "UNMATCHED":
        return "DISCREPANCY"
    else:
        return cur_status if cur_status else bank_status


def kpi_calculation_py(merchant_id, daily_value):
    if daily_value is None:
        daily_value = 0.0
    if merchant_id and merchant_id.startswith("MCH-A"):
        return round(daily_value * 1.1, 2)
    else:
        return round(daily_value, 2)
