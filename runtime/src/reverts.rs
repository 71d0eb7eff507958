//! Test-only switches that undo individual security fixes, so that the adversarial suite can
//! demonstrate it catches each attack (`tests/adversarial.rs`). Compiled in only with the
//! `adversarial-reverts` feature; without it every fix is always active and [`is_reverted`] is a
//! constant `false`. Never enable the feature in a production build.

/// A security fix (named after the finding of the security review it closes) that the adversarial
/// suite can switch off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fix {
    /// F1: the session deposit comes from the SA's receipt, never from the buyer's claim.
    F1SessionDeposit,
    /// F2: AutoPay pays only allowlisted escrows and counts deposits against its caps.
    F2EscrowAllowlist,
    /// F5: a verified payment is completed (settled, committed or released) even when the
    /// request is cancelled.
    F5CompletionOnCancel,
    /// F9: a session voucher is bound to the route's currency, recipient, chain and escrow.
    F9VoucherBinding,
    /// F10: SA answers with missing or contradicting data are refusals.
    F10SaFailClosed,
}

impl Fix {
    const fn bit(self) -> u32 {
        match self {
            Fix::F1SessionDeposit => 1,
            Fix::F2EscrowAllowlist => 1 << 1,
            Fix::F5CompletionOnCancel => 1 << 2,
            Fix::F9VoucherBinding => 1 << 3,
            Fix::F10SaFailClosed => 1 << 4,
        }
    }
}

#[cfg(feature = "adversarial-reverts")]
static REVERTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Switches `fix` off (`reverted = true`) or back on, process-wide. Tests that use this must not
/// run concurrently with tests that expect the fix.
#[cfg(feature = "adversarial-reverts")]
pub fn set_reverted(fix: Fix, reverted: bool) {
    use std::sync::atomic::Ordering;
    if reverted {
        REVERTED.fetch_or(fix.bit(), Ordering::SeqCst);
    } else {
        REVERTED.fetch_and(!fix.bit(), Ordering::SeqCst);
    }
}

/// Whether `fix` is switched off. Always `false` without the `adversarial-reverts` feature.
#[inline]
pub fn is_reverted(fix: Fix) -> bool {
    #[cfg(feature = "adversarial-reverts")]
    {
        REVERTED.load(std::sync::atomic::Ordering::Relaxed) & fix.bit() != 0
    }
    #[cfg(not(feature = "adversarial-reverts"))]
    {
        let _ = fix.bit();
        false
    }
}
