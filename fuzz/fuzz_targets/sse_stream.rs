//! The buyer's SSE reader of metered streams (`SseParser`, `StreamFrame`): hostile bytes never
//! panic, the parser's memory limit holds, and the messages do not depend on how the bytes were
//! split into chunks (the network decides that).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pay402_runtime::mpp::{SseParser, StreamFrame};

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else { return };
    let mut whole = SseParser::with_limit(4096);
    let one = whole.push(body);
    let at = usize::from(split).min(body.len());
    let mut chunked = SseParser::with_limit(4096);
    let two = chunked.push(&body[..at]).and_then(|mut first| {
        first.extend(chunked.push(&body[at..])?);
        Ok(first)
    });
    if let (Ok(one), Ok(two)) = (&one, &two) {
        assert_eq!(one, two, "the messages depend on the chunking");
        assert_eq!(whole.last_event_id(), chunked.last_event_id());
        for message in one {
            let _ = StreamFrame::from_message(message.clone());
        }
    }
});
