//! Addresses and keys shared by the MPP session tests: X Layer's USDT0 and session escrow, and
//! the first Anvil dev accounts (well-known test keys, never funded anywhere real).

/// USDT0 on X Layer.
pub(crate) const USDT0: &str = "0x779ded0c9e1022225f8e0630b35a9b54be713736";
/// The session escrow contract.
pub(crate) const ESCROW: &str = "0x5E550002e64FaF79B41D89fE8439eEb1be66CE3b";
/// Anvil account 0: the payer (buyer).
pub(crate) const PAYER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
pub(crate) const PAYER: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
/// Anvil account 1: the payee (merchant).
pub(crate) const PAYEE_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
pub(crate) const PAYEE: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
/// A stranger's key (not one of anvil's default accounts).
pub(crate) const OTHER_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3d71c2f3d8a9f2bf";
