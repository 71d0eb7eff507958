//! Internal crate of [pay402](https://docs.rs/pay402): the one implementation of every literal
//! check shared by the `#[x402]`/`#[pay]` macros (at compile time) and the runtime (at run time).
//!
//! It is deliberately tiny (one dependency, `tiny-keccak`, for EIP-55) because proc-macro
//! dependencies are built for the host. Users never depend on it directly.
//!
//! * [`decimal`] — exact non-negative decimals and their conversion to atomic units;
//! * [`money`] — price/amount literals (`"$0.001"`, `"1.5 USDC"`, `"0.00001"`);
//! * [`address`] — `0x` + 40 hex EVM addresses with EIP-55 checksum checks;
//! * [`caip2`] — CAIP-2 chain ids such as `eip155:196`;
//! * [`names`] — closed keyword sets (schemes, intents) with "did you mean" suggestions;
//! * [`duration`] — short durations such as `"90s"` or `"5m"`, and whole seconds;
//! * [`mime`] — media types such as `"application/json"`.

pub mod address;
pub mod caip2;
pub mod decimal;
pub mod duration;
pub mod mime;
pub mod money;
pub mod names;

pub use address::{AddressError, EvmAddress};
pub use caip2::{Caip2, Caip2Error};
pub use decimal::{Decimal, DecimalError, Rounding};
pub use money::{MoneyError, MoneySyntax, parse_money, strict_spelling};
