//! The core's one error type: every refusal names the offending field (`param`) and carries a
//! stable snake_case `code` that the API layer maps to an HTTP status.

/// Why the core refused an input or an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// A value has the wrong shape or is out of range.
    #[error("{param}: expected {expected}, got `{got}`")]
    Invalid {
        /// Path of the offending field.
        param: String,
        /// What was expected.
        expected: String,
        /// What was given.
        got: String,
    },
    /// A referenced object (plan, pricing, discount, feature, scheduled change) does not exist.
    #[error("{param}: no {kind} `{id}`")]
    NotFound {
        /// Path of the offending field.
        param: String,
        /// What kind of object was looked up.
        kind: String,
        /// The id or slug that was not found.
        id: String,
    },
    /// The plan is not sold in the requested currency and cycle.
    #[error("{param}: plan `{plan}` is not sold in {currency} per {cycle}")]
    NotSold {
        /// Path of the offending field.
        param: String,
        /// The plan slug.
        plan: String,
        /// Requested currency.
        currency: String,
        /// Requested cycle.
        cycle: String,
    },
    /// A feature slug that the plan does not have.
    #[error("{param}: the plan has no feature `{slug}`")]
    UnknownFeature {
        /// Path of the offending field.
        param: String,
        /// The unknown slug.
        slug: String,
    },
    /// A tier table that does not cover every quantity exactly once.
    #[error("{param}: {detail}")]
    InvalidTiers {
        /// Path of the offending field.
        param: String,
        /// What is wrong with the tiers.
        detail: String,
    },
    /// A negative count or amount.
    #[error("{param}: must not be negative, got `{value}`")]
    Negative {
        /// Path of the offending field.
        param: String,
        /// The value given.
        value: String,
    },
    /// A mid-cycle downgrade without `downgrade_allowed`.
    #[error(
        "this change lowers the recurring price and would take effect mid-cycle: use activation `next_cycle` or set `downgrade_allowed: true`"
    )]
    DowngradeNotAllowed {
        /// Path of the offending field.
        param: String,
    },
    /// A currency change that does not fall on a period boundary.
    #[error(
        "a currency change takes effect only at a period boundary: use activation `next_cycle`"
    )]
    CurrencyChangeNotAtBoundary {
        /// Path of the offending field.
        param: String,
    },
    /// A change dated before the start of the current period.
    #[error("{param}: {detail}")]
    DateOutOfRange {
        /// Path of the offending field.
        param: String,
        /// Why the date is refused.
        detail: String,
    },
    /// The contract is not in a state that allows the operation.
    #[error("{detail}")]
    InvalidState {
        /// Path of the offending field, if any.
        param: String,
        /// What state the contract is in and what the operation needs.
        detail: String,
    },
    /// An amount or date left the representable range.
    #[error("an amount or date is out of the representable range")]
    Overflow,
}

impl CoreError {
    /// Shorthand for [`CoreError::Invalid`].
    pub fn invalid(
        param: impl Into<String>,
        expected: impl Into<String>,
        got: impl ToString,
    ) -> Self {
        CoreError::Invalid {
            param: param.into(),
            expected: expected.into(),
            got: got.to_string(),
        }
    }

    /// Shorthand for [`CoreError::NotFound`].
    pub fn not_found(
        param: impl Into<String>,
        kind: impl Into<String>,
        id: impl Into<String>,
    ) -> Self {
        CoreError::NotFound {
            param: param.into(),
            kind: kind.into(),
            id: id.into(),
        }
    }

    /// Shorthand for [`CoreError::InvalidState`].
    pub fn state(param: impl Into<String>, detail: impl Into<String>) -> Self {
        CoreError::InvalidState {
            param: param.into(),
            detail: detail.into(),
        }
    }

    /// Shorthand for [`CoreError::DateOutOfRange`].
    pub fn date(param: impl Into<String>, detail: impl Into<String>) -> Self {
        CoreError::DateOutOfRange {
            param: param.into(),
            detail: detail.into(),
        }
    }

    /// Stable snake_case code of the error, for clients to branch on.
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::Invalid { .. } => "invalid_value",
            CoreError::NotFound { .. } => "not_found",
            CoreError::NotSold { .. } => "not_sold_in_currency_or_cycle",
            CoreError::UnknownFeature { .. } => "unknown_feature",
            CoreError::InvalidTiers { .. } => "invalid_tiers",
            CoreError::Negative { .. } => "negative_value",
            CoreError::DowngradeNotAllowed { .. } => {
                "downgrade_requires_next_cycle_or_downgrade_allowed"
            }
            CoreError::CurrencyChangeNotAtBoundary { .. } => "currency_change_requires_next_cycle",
            CoreError::DateOutOfRange { .. } => "date_out_of_range",
            CoreError::InvalidState { .. } => "invalid_contract_state",
            CoreError::Overflow => "out_of_range",
        }
    }

    /// Path of the offending field (empty when the error is about the whole request).
    pub fn param(&self) -> &str {
        match self {
            CoreError::Invalid { param, .. }
            | CoreError::NotFound { param, .. }
            | CoreError::NotSold { param, .. }
            | CoreError::UnknownFeature { param, .. }
            | CoreError::InvalidTiers { param, .. }
            | CoreError::Negative { param, .. }
            | CoreError::DowngradeNotAllowed { param }
            | CoreError::CurrencyChangeNotAtBoundary { param }
            | CoreError::DateOutOfRange { param, .. }
            | CoreError::InvalidState { param, .. } => param,
            CoreError::Overflow => "",
        }
    }
}

impl From<jiff::Error> for CoreError {
    fn from(_: jiff::Error) -> Self {
        CoreError::Overflow
    }
}
