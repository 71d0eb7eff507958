//! [`ChannelState`]: one MPP payment channel as the session intent keeps it (wire facts §9.9).
//!
//! The JSON form is the cross-language one OKX's Python `mpp_evm` writes: camelCase keys in a
//! fixed order, amounts as JSON **integers**, the voucher signature as **standard base64** of
//! its 65 raw bytes. [`ChannelState::to_json_bytes`] reproduces Python's
//! `json.dump(state.to_dict(), f, indent=2)` byte for byte; [`ChannelState::from_json`] is the
//! tolerant reader (camelCase or snake_case keys, numbers or numeric strings for amounts,
//! base64 or `0x`-hex signature, unknown keys ignored).

use crate::json::python_indented;
use alloy_primitives::hex;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde::ser::{Error as _, SerializeStruct};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::collections::HashMap;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// A channel state could not be read or written as JSON.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid channel state: {0}")]
pub struct ChannelStateError(String);

impl ChannelStateError {
    fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// One payment channel's server-side state (Python `mpp_evm.store.ChannelState`).
///
/// Amounts are exact integers in the token's base units (Python keeps them as decimal strings
/// in memory and writes JSON integers). The highest voucher signature is kept as lower-case
/// `0x`-hex (`""` when there is none) and written as standard base64.
///
/// # Reservations
///
/// `reserved` is a pay402 extension for *reserve → commit* charging: a request first reserves
/// its price (so concurrent requests cannot overdraw the channel), then commits it after the
/// handler succeeded ([`ChannelState::commit`]: `reserved −= n`, `spent += n`, `units += 1`) or
/// releases it on failure ([`ChannelState::release`]). It counts against
/// [`ChannelState::available`]. The `reserved` key is written **only when non-zero** (after
/// `spent`), so a state without open reservations serialises exactly like Python's, and
/// Python-written files read with `reserved = 0`. A Python reader ignores the key (it would see
/// reserved funds as available); mixed Python/Rust writers should not use reservations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChannelState {
    /// The channel id (`0x` + 64 hex digits), also used as the store key.
    pub channel_id: String,
    /// EIP-155 chain id (196 for X Layer).
    pub chain_id: u64,
    /// The escrow contract holding the deposit.
    pub escrow_contract: String,
    /// The payer (lower-case address).
    pub payer: String,
    /// The payee (the merchant's recipient address).
    pub payee: String,
    /// The token (the challenge's `currency`).
    pub token: String,
    /// Who signs vouchers (the payer unless a session key was authorised).
    pub authorized_signer: String,
    /// The deposit locked in escrow (base units).
    pub deposit: u128,
    /// The highest cumulative voucher amount accepted (base units).
    pub highest_voucher_amount: u128,
    /// That voucher's signature, lower-case `0x`-hex; `""` when no voucher was accepted.
    pub highest_voucher_signature: String,
    /// The minimum increase between two vouchers (base units).
    pub min_voucher_delta: u128,
    /// What requests have consumed so far (base units).
    pub spent: u128,
    /// Amounts reserved by in-flight requests (pay402 extension, see the type docs).
    pub reserved: u128,
    /// Number of charged requests.
    pub units: u64,
    /// The channel is settled and closed on chain.
    pub finalized: bool,
    /// Unix seconds at which a close was requested; 0 = none.
    pub close_requested_at: u64,
    /// Creation time, `YYYY-MM-DDTHH:MM:SSZ` (UTC).
    pub created_at: String,
    /// The metered SSE streams of this channel: per stream (its challenge id), the events
    /// delivered and charged so far (pay402 extension, see [`StreamCounts`]).
    pub streams: StreamCounts,
}

/// One metered stream of a channel ([`StreamCounts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StreamRecord {
    /// The highest event id charged (events `1..=delivered` are paid for, each once).
    pub delivered: u64,
    /// Which connection of the stream may reserve: 0 for the first, raised by each resume
    /// (an older connection still running — a dropped one the server has not noticed yet —
    /// can then only finish its last event, never reserve another).
    pub generation: u64,
    /// The buyer's `Last-Event-ID` at the latest resume: an older connection's last event
    /// above it never reached the buyer, so it is released, not committed.
    pub resumed_from: u64,
}

/// The metered streams of a channel (pay402 extension, like `reserved`): per stream, keyed by
/// its challenge id, its [`StreamRecord`]. Committing an event's price and recording it are one
/// compare-and-swap, so a resumed stream (`Last-Event-ID`) re-sends what was charged for free
/// and never charges an event twice.
///
/// Written as the JSON object `"streams": {"<challenge id>": [delivered, generation,
/// resumedFrom]}` after `createdAt`, **only when non-empty** (a channel without streams
/// serialises exactly like Python's; a bare number reads as `[delivered, 0, 0]`). At most
/// [`StreamCounts::MAX`] streams are kept per channel; starting one more forgets the oldest
/// (which can then no longer be resumed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct StreamCounts(Vec<(String, StreamRecord)>);

impl StreamCounts {
    /// The most streams a channel remembers.
    pub const MAX: usize = 64;

    /// The stream of `challenge_id`, if the channel knows it.
    pub fn get(&self, challenge_id: &str) -> Option<StreamRecord> {
        self.0.iter().find(|(id, _)| id == challenge_id).map(|(_, r)| *r)
    }

    /// The highest event id charged on the stream of `challenge_id`, if the channel knows it.
    pub fn delivered(&self, challenge_id: &str) -> Option<u64> {
        self.get(challenge_id).map(|r| r.delivered)
    }

    fn get_mut(&mut self, challenge_id: &str) -> Option<&mut StreamRecord> {
        self.0.iter_mut().find(|(id, _)| id == challenge_id).map(|(_, r)| r)
    }

    /// Starts the stream of `challenge_id` (nothing delivered, generation 0). Returns `false`
    /// (and changes nothing) when the channel already knows it.
    #[must_use]
    pub fn start(&mut self, challenge_id: &str) -> bool {
        if self.get(challenge_id).is_some() {
            return false;
        }
        if self.0.len() >= Self::MAX {
            self.0.remove(0);
        }
        self.0.push((challenge_id.to_owned(), StreamRecord::default()));
        true
    }

    /// A new connection resumes the stream of `challenge_id` after event `last` (the buyer's
    /// `Last-Event-ID`): the generation is raised and `last` recorded. `None` (and nothing
    /// changed) when the channel does not know the stream or `last` is beyond what it delivered.
    #[must_use]
    pub fn resume(&mut self, challenge_id: &str, last: u64) -> Option<StreamRecord> {
        let r = self.get_mut(challenge_id)?;
        if last > r.delivered {
            return None;
        }
        r.generation = r.generation.checked_add(1)?;
        r.resumed_from = last;
        Some(*r)
    }

    /// Records event `index` of the stream of `challenge_id` as charged (`delivered` becomes at
    /// least `index`). Returns `false` when the channel does not know the stream.
    #[must_use]
    pub fn deliver(&mut self, challenge_id: &str, index: u64) -> bool {
        match self.get_mut(challenge_id) {
            Some(r) => {
                r.delivered = r.delivered.max(index);
                true
            }
            None => false,
        }
    }

    /// Forgets the stream of `challenge_id` if it never delivered an event and was never
    /// resumed (its request was refused before streaming: the challenge may start it again).
    /// Returns whether it was forgotten.
    #[must_use]
    pub fn forget_unused(&mut self, challenge_id: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|(id, r)| id != challenge_id || *r != StreamRecord::default());
        self.0.len() != before
    }

    /// No stream is known.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The streams, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, StreamRecord)> {
        self.0.iter().map(|(id, r)| (id.as_str(), *r))
    }
}

/// Collects `(challenge id, record)` pairs; a repeated id keeps its first record, and only the
/// last [`StreamCounts::MAX`] streams are kept.
impl FromIterator<(String, StreamRecord)> for StreamCounts {
    fn from_iter<I: IntoIterator<Item = (String, StreamRecord)>>(iter: I) -> Self {
        let mut out: Vec<(String, StreamRecord)> = Vec::new();
        for (id, r) in iter {
            if !out.iter().any(|(known, _)| *known == id) {
                out.push((id, r));
            }
        }
        if out.len() > Self::MAX {
            out.drain(..out.len() - Self::MAX);
        }
        Self(out)
    }
}

impl Serialize for StreamCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = serializer.serialize_map(Some(self.0.len()))?;
        for (id, r) in &self.0 {
            m.serialize_entry(id, &[r.delivered, r.generation, r.resumed_from])?;
        }
        m.end()
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds) — the `createdAt` form.
pub(crate) fn format_created_at(at: OffsetDateTime) -> String {
    let utc = at.to_offset(UtcOffset::UTC);
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    // A valid date formats with a static description; never panic anyway.
    utc.format(fmt).unwrap_or_else(|_| utc.unix_timestamp().to_string())
}

impl ChannelState {
    /// A fresh channel: the identifying fields set, amounts 0, no voucher, `created_at` = now.
    pub fn new(
        channel_id: impl Into<String>,
        chain_id: u64,
        escrow_contract: impl Into<String>,
        payer: impl Into<String>,
        payee: impl Into<String>,
    ) -> Self {
        Self {
            channel_id: channel_id.into(),
            chain_id,
            escrow_contract: escrow_contract.into(),
            payer: payer.into(),
            payee: payee.into(),
            created_at: format_created_at(OffsetDateTime::now_utc()),
            ..Self::default()
        }
    }

    /// What the channel can still pay for: `highest_voucher_amount − spent − reserved`
    /// (0 when the books are inconsistent rather than underflowing).
    pub fn available(&self) -> u128 {
        self.highest_voucher_amount.saturating_sub(self.spent).saturating_sub(self.reserved)
    }

    /// Reserves `amount` for an in-flight request. Returns `false` (and changes nothing) when
    /// [`ChannelState::available`] is smaller than `amount`.
    #[must_use]
    pub fn reserve(&mut self, amount: u128) -> bool {
        if self.available() < amount {
            return false;
        }
        self.reserved += amount;
        true
    }

    /// Turns a reservation into a charge: `reserved −= amount`, `spent += amount`,
    /// `units += 1`. Returns `false` (and changes nothing) when less than `amount` is reserved.
    #[must_use]
    pub fn commit(&mut self, amount: u128) -> bool {
        let (Some(reserved), Some(spent), Some(units)) =
            (self.reserved.checked_sub(amount), self.spent.checked_add(amount), self.units.checked_add(1))
        else {
            return false;
        };
        self.reserved = reserved;
        self.spent = spent;
        self.units = units;
        true
    }

    /// Drops a reservation (the request failed). Returns `false` (and changes nothing) when
    /// less than `amount` is reserved.
    #[must_use]
    pub fn release(&mut self, amount: u128) -> bool {
        match self.reserved.checked_sub(amount) {
            Some(r) => {
                self.reserved = r;
                true
            }
            None => false,
        }
    }

    /// The signature as standard base64 of its raw bytes (`""` when none) — the JSON form.
    pub fn signature_base64(&self) -> Result<String, ChannelStateError> {
        let sig = self.highest_voucher_signature.as_str();
        if sig.is_empty() {
            return Ok(String::new());
        }
        let digits = sig.strip_prefix("0x").or_else(|| sig.strip_prefix("0X")).unwrap_or(sig);
        let raw = hex::decode(digits)
            .map_err(|e| ChannelStateError::new(format!("highestVoucherSignature is not hex: {e}")))?;
        Ok(STANDARD.encode(raw))
    }

    /// The file bytes Python's `FileStore` writes: `json.dump(indent=2)`, ASCII-escaped, no
    /// trailing newline.
    pub fn to_json_bytes(&self) -> Result<Vec<u8>, ChannelStateError> {
        python_indented(self).map_err(|e| ChannelStateError::new(e.to_string()))
    }

    /// The tolerant reader (see the module docs). Required keys: `channelId`, `chainId`,
    /// `escrowContract`, `payer`, `payee`; the others default like Python's dataclass
    /// (`""`, 0, `false`). `null` counts as absent.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ChannelStateError> {
        let map: HashMap<String, Box<RawValue>> =
            serde_json::from_slice(bytes).map_err(|e| ChannelStateError::new(e.to_string()))?;
        Self::from_raw_map(&map)
    }

    fn from_raw_map(map: &HashMap<String, Box<RawValue>>) -> Result<Self, ChannelStateError> {
        let r = Reader { map };
        Ok(Self {
            channel_id: r.string("channelId", "channel_id")?.ok_or_else(|| missing("channelId"))?,
            chain_id: r.uint("chainId", "chain_id")?.ok_or_else(|| missing("chainId"))?,
            escrow_contract: r.string("escrowContract", "escrow_contract")?.ok_or_else(|| missing("escrowContract"))?,
            payer: r.string("payer", "payer")?.ok_or_else(|| missing("payer"))?,
            payee: r.string("payee", "payee")?.ok_or_else(|| missing("payee"))?,
            token: r.string("token", "token")?.unwrap_or_default(),
            authorized_signer: r.string("authorizedSigner", "authorized_signer")?.unwrap_or_default(),
            deposit: r.amount("deposit", "deposit")?.unwrap_or(0),
            highest_voucher_amount: r.amount("highestVoucherAmount", "highest_voucher_amount")?.unwrap_or(0),
            highest_voucher_signature: r.signature("highestVoucherSignature", "highest_voucher_signature")?,
            min_voucher_delta: r.amount("minVoucherDelta", "min_voucher_delta")?.unwrap_or(0),
            spent: r.amount("spent", "spent")?.unwrap_or(0),
            reserved: r.amount("reserved", "reserved")?.unwrap_or(0),
            units: r.uint("units", "units")?.unwrap_or(0),
            finalized: r.boolean("finalized", "finalized")?.unwrap_or(false),
            close_requested_at: r.uint("closeRequestedAt", "close_requested_at")?.unwrap_or(0),
            created_at: r.string("createdAt", "created_at")?.unwrap_or_default(),
            streams: r.streams()?,
        })
    }
}

fn missing(key: &str) -> ChannelStateError {
    ChannelStateError::new(format!("missing {key}"))
}

/// Serialises the cross-language JSON object (key order and value kinds of wire facts §9.9).
impl Serialize for ChannelState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let sig = self.signature_base64().map_err(S::Error::custom)?;
        let fields = 16 + usize::from(self.reserved != 0) + usize::from(!self.streams.is_empty());
        let mut s = serializer.serialize_struct("ChannelState", fields)?;
        s.serialize_field("channelId", &self.channel_id)?;
        s.serialize_field("chainId", &self.chain_id)?;
        s.serialize_field("escrowContract", &self.escrow_contract)?;
        s.serialize_field("payer", &self.payer)?;
        s.serialize_field("payee", &self.payee)?;
        s.serialize_field("token", &self.token)?;
        s.serialize_field("authorizedSigner", &self.authorized_signer)?;
        s.serialize_field("deposit", &self.deposit)?;
        s.serialize_field("highestVoucherAmount", &self.highest_voucher_amount)?;
        s.serialize_field("highestVoucherSignature", &sig)?;
        s.serialize_field("minVoucherDelta", &self.min_voucher_delta)?;
        s.serialize_field("spent", &self.spent)?;
        if self.reserved == 0 {
            s.skip_field("reserved")?;
        } else {
            s.serialize_field("reserved", &self.reserved)?;
        }
        s.serialize_field("units", &self.units)?;
        s.serialize_field("finalized", &self.finalized)?;
        s.serialize_field("closeRequestedAt", &self.close_requested_at)?;
        s.serialize_field("createdAt", &self.created_at)?;
        if self.streams.is_empty() {
            s.skip_field("streams")?;
        } else {
            s.serialize_field("streams", &self.streams)?;
        }
        s.end()
    }
}

/// The tolerant reader ([`ChannelState::from_json`]). Works with `serde_json` deserializers
/// (`from_slice`, `from_str`, `from_reader`), not with `serde_json::Value` or other formats:
/// amounts beyond `u64` are read from the raw JSON text so they stay exact.
impl<'de> Deserialize<'de> for ChannelState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = HashMap::<String, Box<RawValue>>::deserialize(deserializer)?;
        Self::from_raw_map(&map).map_err(serde::de::Error::custom)
    }
}

struct Reader<'a> {
    map: &'a HashMap<String, Box<RawValue>>,
}

impl Reader<'_> {
    /// The raw JSON text under the camelCase key, else the snake_case one; `null` = absent.
    fn raw<'k>(&self, camel: &'k str, snake: &'k str) -> Option<(&'k str, &str)> {
        [camel, snake].into_iter().find_map(|k| {
            let raw = self.map.get(k)?.get().trim();
            (raw != "null").then_some((k, raw))
        })
    }

    fn string(&self, camel: &str, snake: &str) -> Result<Option<String>, ChannelStateError> {
        let Some((key, raw)) = self.raw(camel, snake) else { return Ok(None) };
        serde_json::from_str::<String>(raw)
            .map(Some)
            .map_err(|_| ChannelStateError::new(format!("{key}: not a string")))
    }

    fn boolean(&self, camel: &str, snake: &str) -> Result<Option<bool>, ChannelStateError> {
        let Some((key, raw)) = self.raw(camel, snake) else { return Ok(None) };
        serde_json::from_str::<bool>(raw).map(Some).map_err(|_| ChannelStateError::new(format!("{key}: not a boolean")))
    }

    /// A non-negative integer: a JSON integer or a decimal string, read exactly.
    fn amount(&self, camel: &str, snake: &str) -> Result<Option<u128>, ChannelStateError> {
        let Some((key, raw)) = self.raw(camel, snake) else { return Ok(None) };
        let text = if raw.starts_with('"') {
            serde_json::from_str::<String>(raw).map_err(|_| ChannelStateError::new(format!("{key}: bad string")))?
        } else {
            raw.to_owned()
        };
        let digits = text.trim();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ChannelStateError::new(format!("{key}: not a non-negative integer: {raw}")));
        }
        digits.parse::<u128>().map(Some).map_err(|_| ChannelStateError::new(format!("{key}: out of range: {raw}")))
    }

    fn uint(&self, camel: &str, snake: &str) -> Result<Option<u64>, ChannelStateError> {
        match self.amount(camel, snake)? {
            None => Ok(None),
            Some(v) => {
                u64::try_from(v).map(Some).map_err(|_| ChannelStateError::new(format!("{camel}: out of range: {v}")))
            }
        }
    }

    /// `streams`: an object of challenge id → `[delivered, generation, resumedFrom]` (or a bare
    /// `delivered`); absent: none. Order is kept.
    fn streams(&self) -> Result<StreamCounts, ChannelStateError> {
        use serde_json::Value;
        let Some((key, raw)) = self.raw("streams", "streams") else { return Ok(StreamCounts::default()) };
        let bad = || ChannelStateError::new(format!("{key}: not an object of stream records"));
        let pairs: serde_json::Map<String, Value> = serde_json::from_str(raw).map_err(|_| bad())?;
        pairs
            .into_iter()
            .map(|(id, v)| {
                let record = match &v {
                    Value::Number(n) => {
                        StreamRecord { delivered: n.as_u64().ok_or_else(bad)?, ..StreamRecord::default() }
                    }
                    Value::Array(a) if a.len() == 3 => {
                        let n = |i: usize| a[i].as_u64().ok_or_else(bad);
                        StreamRecord { delivered: n(0)?, generation: n(1)?, resumed_from: n(2)? }
                    }
                    _ => return Err(bad()),
                };
                Ok((id, record))
            })
            .collect()
    }

    /// base64 (standard, padded or not) or `0x`-hex ⇒ lower-case `0x`-hex; absent/`""` ⇒ `""`.
    fn signature(&self, camel: &str, snake: &str) -> Result<String, ChannelStateError> {
        let Some(s) = self.string(camel, snake)? else { return Ok(String::new()) };
        let s = s.trim();
        // An empty hex signature (`"0x"`) is no signature: it is written back as `""`.
        if s.is_empty() || s.eq_ignore_ascii_case("0x") {
            return Ok(String::new());
        }
        if let Some(digits) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))
            && digits.len() % 2 == 0
            && digits.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Ok(format!("0x{}", digits.to_ascii_lowercase()));
        }
        let raw = STANDARD
            .decode(s)
            .or_else(|_| STANDARD_NO_PAD.decode(s))
            .map_err(|_| ChannelStateError::new(format!("{camel}: neither base64 nor 0x-hex")))?;
        Ok(format!("0x{}", hex::encode(raw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChannelState {
        ChannelState {
            channel_id: "0xab".into(),
            chain_id: 196,
            escrow_contract: "0xe".into(),
            payer: "0xp".into(),
            payee: "0xq".into(),
            token: "0xt".into(),
            authorized_signer: "0xp".into(),
            deposit: u128::MAX,
            highest_voucher_amount: 1_000_000,
            highest_voucher_signature: format!("0x{}", "ab".repeat(65)),
            min_voucher_delta: 0,
            spent: 3000,
            reserved: 0,
            units: 3,
            finalized: false,
            close_requested_at: 0,
            created_at: "2026-03-30T10:00:00Z".into(),
            streams: StreamCounts::default(),
        }
    }

    #[test]
    fn streams_are_written_only_when_known_and_read_back_in_order() {
        let mut s = sample();
        assert!(!String::from_utf8(s.to_json_bytes().unwrap()).unwrap().contains("streams"));
        assert!(s.streams.start("chal-b") && s.streams.start("chal-a"));
        assert!(!s.streams.start("chal-a"), "a stream starts once");
        assert!(s.streams.deliver("chal-a", 2) && s.streams.deliver("chal-a", 1) && s.streams.deliver("chal-b", 1));
        assert!(!s.streams.deliver("unknown", 1));
        assert_eq!(s.streams.resume("chal-a", 3), None, "beyond what was delivered");
        let resumed = s.streams.resume("chal-a", 1).unwrap();
        assert_eq!(resumed, StreamRecord { delivered: 2, generation: 1, resumed_from: 1 });
        let text = String::from_utf8(s.to_json_bytes().unwrap()).unwrap();
        let tail = "\"createdAt\": \"2026-03-30T10:00:00Z\",\n  \"streams\": {\n    \"chal-b\": [\n      1,\n      0,\n      0\n    ],\n    \"chal-a\": [\n      2,\n      1,\n      1\n    ]\n  }\n}";
        assert!(text.ends_with(tail), "{text}");
        let back = ChannelState::from_json(text.as_bytes()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.streams.delivered("chal-b"), Some(1));
        let bare = text.replace(tail, "\"createdAt\": \"x\", \"streams\": {\"c\": 7}}");
        assert_eq!(ChannelState::from_json(bare.as_bytes()).unwrap().streams.get("c").unwrap().delivered, 7);
        let negative = text.replace("      2,\n      1,", "      -2,\n      1,");
        assert!(ChannelState::from_json(negative.as_bytes()).is_err(), "counts are u64");
        // Bounded: the oldest stream is forgotten.
        for i in 0..StreamCounts::MAX {
            assert!(s.streams.start(&format!("more-{i}")));
        }
        assert_eq!(s.streams.iter().count(), StreamCounts::MAX);
        assert_eq!((s.streams.delivered("chal-b"), s.streams.delivered("chal-a")), (None, None));
    }

    #[test]
    fn round_trip_is_exact_beyond_u64() {
        let s = sample();
        let bytes = s.to_json_bytes().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(&format!("\"deposit\": {}", u128::MAX)));
        assert!(!text.contains("reserved"));
        assert_eq!(ChannelState::from_json(&bytes).unwrap(), s);
        assert_eq!(serde_json::from_slice::<ChannelState>(&bytes).unwrap(), s);
    }

    #[test]
    fn reserved_written_only_when_non_zero() {
        let mut s = sample();
        assert!(s.reserve(500));
        let text = String::from_utf8(s.to_json_bytes().unwrap()).unwrap();
        assert!(text.contains("\"spent\": 3000,\n  \"reserved\": 500,\n  \"units\": 3"));
        assert_eq!(ChannelState::from_json(text.as_bytes()).unwrap(), s);
    }

    #[test]
    fn reserve_commit_release() {
        let mut s = sample();
        assert_eq!(s.available(), 997_000);
        assert!(!s.reserve(997_001));
        assert!(s.reserve(997_000));
        assert_eq!(s.available(), 0);
        assert!(!s.reserve(1));
        assert!(s.commit(400_000));
        assert_eq!((s.spent, s.reserved, s.units), (403_000, 597_000, 4));
        assert!(!s.commit(597_001));
        assert!(s.release(597_000));
        assert!(!s.release(1));
        assert_eq!(s.available(), 597_000);
        s.spent = 2_000_000;
        assert_eq!(s.available(), 0);
    }

    #[test]
    fn reader_errors() {
        assert!(ChannelState::from_json(b"[]").is_err());
        assert!(ChannelState::from_json(br#"{"chainId": 1, "escrowContract": "", "payer": "", "payee": ""}"#).is_err());
        let base = r#""channelId": "c", "chainId": 1, "escrowContract": "e", "payer": "p", "payee": "q""#;
        for bad in [
            r#""deposit": -1"#,
            r#""deposit": 1.5"#,
            r#""deposit": "12a""#,
            r#""deposit": 1e3"#,
            r#""units": 18446744073709551616"#,
            r#""finalized": "yes""#,
            r#""highestVoucherSignature": "not base64!""#,
            r#""payer": 5"#,
        ] {
            let json = format!("{{{base}, {bad}}}");
            assert!(ChannelState::from_json(json.as_bytes()).is_err(), "{bad}");
        }
        let ok = format!("{{{base}, \"deposit\": null, \"highestVoucherSignature\": null}}");
        let s = ChannelState::from_json(ok.as_bytes()).unwrap();
        assert_eq!((s.deposit, s.highest_voucher_signature.as_str()), (0, ""));
    }

    #[test]
    fn created_at_format() {
        let t = OffsetDateTime::from_unix_timestamp(1_774_864_800).unwrap();
        assert_eq!(format_created_at(t), "2026-03-30T10:00:00Z");
    }
}
