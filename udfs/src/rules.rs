//! The business rules behind the five functions, as configuration.
//!
//! The seed's Python functions are placeholders for real business rules, so every
//! constant they use (risk threshold, flag words, labels, masking, KPI multipliers)
//! lives here. [`Rules::default`] is exactly the seed's logic. The struct is
//! `serde`-friendly and is the `[rules]` table of the server's TOML config; unknown
//! keys are rejected so a typo never silently falls back to a default.

use serde::{Deserialize, Serialize};

/// Configurable rules for the reconciliation functions. See DESIGN §3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// `flag_compliance`: a fraud score strictly above this is high risk (seed: 0.8).
    pub risk_threshold: f64,
    /// `flag_compliance`: words that, found in the upper-cased policy flags, mean high risk.
    pub high_risk_words: Vec<String>,
    /// `flag_compliance`: words that, found in the upper-cased policy flags, require KYC.
    pub kyc_words: Vec<String>,
    /// Output labels and the bank statuses `derive_status` recognises.
    pub labels: Labels,
    /// `mask_sensitive`: how many leading characters stay readable (seed: 2).
    pub mask_keep: usize,
    /// `mask_sensitive`: the character that replaces every further character (seed: `*`).
    pub mask_char: char,
    /// `kpi_calculation`: merchant-id prefixes and their multipliers; the first
    /// matching prefix wins, no match means a multiplier of 1 (seed: `MCH-A` → 1.1).
    pub kpi_multipliers: Vec<KpiMultiplier>,
}

/// Labels produced (and, for the bank statuses, recognised) by the functions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Labels {
    /// `flag_compliance` result for high risk.
    pub high_risk: String,
    /// `flag_compliance` result when KYC is required.
    pub requires_kyc: String,
    /// `flag_compliance` result otherwise.
    pub ok: String,
    /// `derive_status` result when neither status is known.
    pub unknown: String,
    /// Bank status (compared upper-cased) meaning the statement matched.
    pub matched: String,
    /// Bank status (compared upper-cased) meaning no statement matched.
    pub unmatched: String,
    /// `derive_status` result for an unmatched bank status.
    pub discrepancy: String,
}

/// One `prefix → multiplier` entry of `kpi_calculation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KpiMultiplier {
    /// Merchant ids starting with this (case-sensitive) get the multiplier.
    pub prefix: String,
    /// Factor applied to the daily value before rounding to 2 decimals.
    pub multiplier: f64,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            risk_threshold: 0.8,
            high_risk_words: vec!["BLACKLIST".to_owned()],
            kyc_words: vec!["KYC".to_owned()],
            labels: Labels::default(),
            mask_keep: 2,
            mask_char: '*',
            kpi_multipliers: vec![KpiMultiplier {
                prefix: "MCH-A".to_owned(),
                multiplier: 1.1,
            }],
        }
    }
}

impl Default for Labels {
    fn default() -> Self {
        Self {
            high_risk: "HIGH_RISK".to_owned(),
            requires_kyc: "REQUIRES_KYC".to_owned(),
            ok: "OK".to_owned(),
            unknown: "UNKNOWN".to_owned(),
            matched: "MATCHED".to_owned(),
            unmatched: "UNMATCHED".to_owned(),
            discrepancy: "DISCREPANCY".to_owned(),
        }
    }
}

/// Why a [`Rules`] value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRules(pub String);

impl std::fmt::Display for InvalidRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid [rules]: {}", self.0)
    }
}

impl std::error::Error for InvalidRules {}

impl Rules {
    /// Checks the rules for values that would make a function meaningless:
    /// an empty flag word (it would match every row), a word containing `,`
    /// (list flags are matched element by element, which equals matching the
    /// comma-joined string only for words without commas), a NaN threshold or a
    /// non-finite multiplier.
    pub fn validate(&self) -> Result<(), InvalidRules> {
        if self.risk_threshold.is_nan() {
            return Err(InvalidRules("risk_threshold is NaN".into()));
        }
        for (what, words) in [
            ("high_risk_words", &self.high_risk_words),
            ("kyc_words", &self.kyc_words),
        ] {
            for w in words {
                if w.is_empty() {
                    return Err(InvalidRules(format!("{what} contains an empty word")));
                }
                if w.contains(',') {
                    return Err(InvalidRules(format!("{what} entry {w:?} contains ','")));
                }
            }
        }
        for m in &self.kpi_multipliers {
            if !m.multiplier.is_finite() {
                return Err(InvalidRules(format!(
                    "kpi multiplier for prefix {:?} is not finite",
                    m.prefix
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seed_values() {
        let r = Rules::default();
        assert_eq!(r.risk_threshold, 0.8);
        assert_eq!(r.high_risk_words, ["BLACKLIST"]);
        assert_eq!(r.kyc_words, ["KYC"]);
        assert_eq!(r.mask_keep, 2);
        assert_eq!(r.mask_char, '*');
        assert_eq!(r.kpi_multipliers[0].prefix, "MCH-A");
        assert_eq!(r.kpi_multipliers[0].multiplier, 1.1);
        assert!(r.validate().is_ok());
    }

    #[test]
    fn toml_overrides_and_rejects_unknown_keys() {
        let r: Rules = toml::from_str(
            r##"
            risk_threshold = 0.9
            mask_char = "#"
            [labels]
            ok = "FINE"
            [[kpi_multipliers]]
            prefix = "MCH-B"
            multiplier = 2.0
            "##,
        )
        .unwrap();
        assert_eq!(r.risk_threshold, 0.9);
        assert_eq!(r.mask_char, '#');
        assert_eq!(r.labels.ok, "FINE");
        assert_eq!(r.labels.high_risk, "HIGH_RISK");
        assert_eq!(r.kpi_multipliers.len(), 1);
        let err = toml::from_str::<Rules>("risk_treshold = 0.9").unwrap_err();
        assert!(err.to_string().contains("risk_treshold"), "{err}");
    }

    #[test]
    fn validate_rejects_meaningless_rules() {
        let mut r = Rules::default();
        r.kyc_words.push(String::new());
        assert!(r.validate().is_err());
        let r = Rules {
            high_risk_words: vec!["A,B".into()],
            ..Rules::default()
        };
        assert!(r.validate().is_err());
        let mut r = Rules::default();
        r.kpi_multipliers[0].multiplier = f64::INFINITY;
        assert!(r.validate().is_err());
    }
}
