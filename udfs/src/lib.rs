//! # recon-udfs
//!
//! The five payment-reconciliation functions of the seed's PySpark UDF library,
//! as native, vectorised DataFusion scalar functions:
//!
//! | SQL | module |
//! |---|---|
//! | `calc_discrepancy(amount, amount_posted)` | [`calc_discrepancy`] |
//! | `flag_compliance(fraud_score, policy_flags)` | [`flag_compliance`] |
//! | `mask_sensitive(user_id)` | [`mask_sensitive`] |
//! | `derive_status(cur_status, bank_status)` | [`derive_status`] |
//! | `kpi_calculation(merchant_id, daily_value)` | [`kpi_calculation`] |
//!
//! With [`Rules::default`] every function returns exactly what the seed's Python
//! function returns, for every input (NULL, '', NaN, ±inf, -0.0, non-ASCII text;
//! rounding is Python's `round(x, 2)`). The crate is pure DataFusion: no tokio, no
//! network. Register everything with [`register_all`].

pub mod calc_discrepancy;
pub mod derive_status;
pub mod flag_compliance;
pub mod kpi_calculation;
pub mod mask_sensitive;
pub mod round;
pub mod rules;

mod args;
mod output;
#[cfg(test)]
mod test_util;

use datafusion::logical_expr::{DocSection, ScalarUDF};
use datafusion::prelude::SessionContext;

pub use calc_discrepancy::CalcDiscrepancy;
pub use derive_status::DeriveStatus;
pub use flag_compliance::FlagCompliance;
pub use kpi_calculation::KpiCalculation;
pub use mask_sensitive::MaskSensitive;
pub use rules::{InvalidRules, KpiMultiplier, Labels, Rules};

/// The documentation section the five functions are listed under.
pub(crate) const DOC_SECTION: DocSection = DocSection {
    include: true,
    label: "Reconciliation Functions",
    description: Some("Payment reconciliation functions of recon (configurable under [rules])."),
};

/// The five functions, configured with `rules`.
pub fn all_functions(rules: &Rules) -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(CalcDiscrepancy::new()),
        ScalarUDF::new_from_impl(FlagCompliance::new(rules)),
        ScalarUDF::new_from_impl(MaskSensitive::new(rules)),
        ScalarUDF::new_from_impl(DeriveStatus::new(rules)),
        ScalarUDF::new_from_impl(KpiCalculation::new(rules)),
    ]
}

/// Registers the five functions, configured with `rules`, in `ctx`.
///
/// Rules are used as given; call [`Rules::validate`] first to reject meaningless ones.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> datafusion::common::Result<()> {
/// use datafusion::prelude::SessionContext;
///
/// let ctx = SessionContext::new();
/// recon_udfs::register_all(&ctx, &recon_udfs::Rules::default());
/// let rows = ctx
///     .sql("SELECT calc_discrepancy(0.0, 2.675) AS d, mask_sensitive('USR-1234') AS m")
///     .await?
///     .collect()
///     .await?;
/// let text = datafusion::arrow::util::pretty::pretty_format_batches(&rows)?.to_string();
/// assert!(text.contains("| 2.67 | US****** |"), "{text}");
/// # Ok(())
/// # }
/// ```
pub fn register_all(ctx: &SessionContext, rules: &Rules) {
    for udf in all_functions(rules) {
        ctx.register_udf(udf);
    }
}
