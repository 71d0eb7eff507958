//! An in-memory EIP-3009 token ledger — balances and used authorization nonces — for the
//! in-process settlers (tests, demos, local development).
//!
//! The ledger plays the token contract's part of `transferWithAuthorization`: a nonce can be
//! used once per (token, authorizer), and a transfer needs the authorizer's balance. Batches are
//! applied atomically (all transfers or none), which is what a payment with splits needs.
//!
//! ```
//! use pay402_runtime::evm::{Address, B256, TokenLedger, TransferWithAuthorization, U256};
//!
//! let token = Address::repeat_byte(0x77);
//! let (payer, payee) = (Address::repeat_byte(0xaa), Address::repeat_byte(0x11));
//! let mut ledger = TokenLedger::new();
//! ledger.credit(token, payer, U256::from(1_000)).unwrap();
//! let transfer = TransferWithAuthorization {
//!     from: payer,
//!     to: payee,
//!     value: U256::from(400),
//!     validAfter: U256::ZERO,
//!     validBefore: U256::MAX,
//!     nonce: B256::repeat_byte(1),
//! };
//! ledger.apply_authorizations(token, std::slice::from_ref(&transfer)).unwrap();
//! assert_eq!(ledger.balance_of(token, payer), U256::from(600));
//! assert_eq!(ledger.balance_of(token, payee), U256::from(400));
//! assert!(ledger.apply_authorizations(token, &[transfer]).is_err()); // nonce used
//! ```

use super::TransferWithAuthorization;
use alloy_primitives::{Address, B256, U256};
use std::collections::{HashMap, HashSet};

/// Why a ledger operation was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The authorizer already used this nonce on this token (also: twice in one batch).
    #[error("authorization nonce already used")]
    NonceUsed {
        /// The token.
        token: Address,
        /// The authorizer.
        authorizer: Address,
        /// The nonce.
        nonce: B256,
    },
    /// The owner's balance does not cover the batch.
    #[error("insufficient balance")]
    InsufficientBalance {
        /// The token.
        token: Address,
        /// The owner.
        owner: Address,
        /// Their balance before the batch.
        balance: U256,
        /// What the batch needed from them (so far).
        needed: U256,
    },
    /// A balance would exceed 2^256 − 1.
    #[error("uint256 overflow")]
    Overflow,
}

/// Balances per (token, owner) and used EIP-3009 nonces per (token, authorizer).
#[derive(Clone, Debug, Default)]
pub struct TokenLedger {
    balances: HashMap<(Address, Address), U256>,
    faucet: U256,
    used_nonces: HashSet<(Address, Address, B256)>,
}

impl TokenLedger {
    /// An empty ledger (every balance zero).
    pub fn new() -> Self {
        Self::default()
    }

    /// The starting balance of accounts the ledger has not seen yet (zero by default).
    pub fn faucet(&self) -> U256 {
        self.faucet
    }

    /// Development faucet: accounts not seen yet (per token) start with `amount`.
    pub fn set_faucet(&mut self, amount: U256) {
        self.faucet = amount;
    }

    /// The balance of `owner` in `token` (the faucet amount for accounts not seen yet).
    pub fn balance_of(&self, token: Address, owner: Address) -> U256 {
        self.balances.get(&(token, owner)).copied().unwrap_or(self.faucet)
    }

    /// Credits `amount` to `owner`; returns the new balance.
    pub fn credit(&mut self, token: Address, owner: Address, amount: U256) -> Result<U256, LedgerError> {
        let balance = self.balance_of(token, owner).checked_add(amount).ok_or(LedgerError::Overflow)?;
        self.balances.insert((token, owner), balance);
        Ok(balance)
    }

    /// Whether `authorizer` already used `nonce` on `token`.
    pub fn is_nonce_used(&self, token: Address, authorizer: Address, nonce: B256) -> bool {
        self.used_nonces.contains(&(token, authorizer, nonce))
    }

    /// Checks a batch of transfers without applying it: every nonce unused (and distinct within
    /// the batch), then every payer's balance sufficient for the batch applied in order. Nonce
    /// failures are reported before balance failures.
    pub fn check_authorizations(&self, token: Address, batch: &[TransferWithAuthorization]) -> Result<(), LedgerError> {
        self.simulate(token, batch).map(drop)
    }

    /// Applies a batch of transfers atomically (all or nothing): moves the balances and marks
    /// the nonces used. Fails as [`Self::check_authorizations`] does.
    pub fn apply_authorizations(
        &mut self,
        token: Address,
        batch: &[TransferWithAuthorization],
    ) -> Result<(), LedgerError> {
        let balances = self.simulate(token, batch)?;
        for (owner, balance) in balances {
            self.balances.insert((token, owner), balance);
        }
        for t in batch {
            self.used_nonces.insert((token, t.from, t.nonce));
        }
        Ok(())
    }

    /// The balances the batch would leave (only the accounts it touches).
    fn simulate(
        &self,
        token: Address,
        batch: &[TransferWithAuthorization],
    ) -> Result<HashMap<Address, U256>, LedgerError> {
        let mut nonces = HashSet::new();
        for t in batch {
            if self.is_nonce_used(token, t.from, t.nonce) || !nonces.insert((t.from, t.nonce)) {
                return Err(LedgerError::NonceUsed { token, authorizer: t.from, nonce: t.nonce });
            }
        }
        let mut scratch: HashMap<Address, U256> = HashMap::new();
        let mut needed: HashMap<Address, U256> = HashMap::new();
        for t in batch {
            let need = needed.entry(t.from).or_default();
            *need = need.checked_add(t.value).ok_or(LedgerError::Overflow)?;
            let need = *need;
            let from_balance = *scratch.entry(t.from).or_insert_with(|| self.balance_of(token, t.from));
            let debited = from_balance.checked_sub(t.value).ok_or(LedgerError::InsufficientBalance {
                token,
                owner: t.from,
                balance: self.balance_of(token, t.from),
                needed: need,
            })?;
            scratch.insert(t.from, debited);
            let to_balance = *scratch.entry(t.to).or_insert_with(|| self.balance_of(token, t.to));
            scratch.insert(t.to, to_balance.checked_add(t.value).ok_or(LedgerError::Overflow)?);
        }
        Ok(scratch)
    }
}

/// The deterministic pseudo transaction hash of a settlement:
/// `keccak256(uint256 chainId ‖ address asset ‖ address from ‖ bytes32 nonce)` (packed), as
/// lower-case `0x` hex.
pub fn transaction_hash(chain_id: u64, asset: Address, from: Address, nonce: B256) -> String {
    let mut packed = Vec::with_capacity(32 + 20 + 20 + 32);
    packed.extend_from_slice(&U256::from(chain_id).to_be_bytes::<32>());
    packed.extend_from_slice(asset.as_slice());
    packed.extend_from_slice(from.as_slice());
    packed.extend_from_slice(nonce.as_slice());
    super::to_hex(alloy_primitives::keccak256(&packed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: Address = Address::repeat_byte(0x77);
    const A: Address = Address::repeat_byte(0xaa);
    const B: Address = Address::repeat_byte(0xbb);
    const C: Address = Address::repeat_byte(0xcc);

    fn t(from: Address, to: Address, value: u64, nonce: u8) -> TransferWithAuthorization {
        TransferWithAuthorization {
            from,
            to,
            value: U256::from(value),
            validAfter: U256::ZERO,
            validBefore: U256::MAX,
            nonce: B256::repeat_byte(nonce),
        }
    }

    #[test]
    fn batches_are_atomic() {
        let mut l = TokenLedger::new();
        l.credit(TOKEN, A, U256::from(100)).unwrap();
        // 60 + 50 > 100: nothing moves, no nonce is used.
        let e = l.apply_authorizations(TOKEN, &[t(A, B, 60, 1), t(A, C, 50, 2)]).unwrap_err();
        assert!(matches!(e, LedgerError::InsufficientBalance { needed, .. } if needed == U256::from(110)));
        assert_eq!(l.balance_of(TOKEN, A), U256::from(100));
        assert!(!l.is_nonce_used(TOKEN, A, B256::repeat_byte(1)));
        l.apply_authorizations(TOKEN, &[t(A, B, 60, 1), t(A, C, 40, 2)]).unwrap();
        assert_eq!(
            (l.balance_of(TOKEN, A), l.balance_of(TOKEN, B), l.balance_of(TOKEN, C)),
            (U256::ZERO, U256::from(60), U256::from(40))
        );
        assert!(l.is_nonce_used(TOKEN, A, B256::repeat_byte(2)));
    }

    #[test]
    fn nonces_once_per_token_and_authorizer() {
        let mut l = TokenLedger::new();
        l.set_faucet(U256::from(10));
        assert_eq!(l.faucet(), U256::from(10));
        assert!(matches!(
            l.check_authorizations(TOKEN, &[t(A, B, 1, 1), t(A, C, 1, 1)]),
            Err(LedgerError::NonceUsed { .. })
        ));
        l.apply_authorizations(TOKEN, &[t(A, B, 1, 1), t(B, A, 1, 1)]).unwrap();
        assert!(l.apply_authorizations(TOKEN, &[t(A, B, 1, 1)]).is_err());
        l.apply_authorizations(Address::repeat_byte(0x78), &[t(A, B, 1, 1)]).unwrap();
        // Self-transfer keeps the balance.
        l.apply_authorizations(TOKEN, &[t(C, C, 10, 9)]).unwrap();
        assert_eq!(l.balance_of(TOKEN, C), U256::from(10));
        assert_eq!(l.credit(TOKEN, C, U256::MAX), Err(LedgerError::Overflow));
    }
}
