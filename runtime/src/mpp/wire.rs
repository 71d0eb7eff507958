//! The MPP wire names of the `evm` method, defined once and shared by the seller
//! ([`crate::mpp::Mpp`]), the buyers and the embedded SA (wire facts §5).

/// The payment method's name on the wire (`method="evm"`).
pub const EVM_METHOD: &str = "evm";
/// The one-off payment intent (`intent="charge"`).
pub const CHARGE_INTENT: &str = "charge";
/// The escrow channel intent (`intent="session"`).
pub const SESSION_INTENT: &str = "session";
/// Most splits a charge may carry (`mpp_evm` `MAX_SPLITS`).
pub const MAX_SPLITS: usize = 10;
