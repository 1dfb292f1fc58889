//! The fast path of [`wire::parse`](crate::wire): a scanner for the flat JSON object a packet
//! is, about twice as fast as serde's derived deserializer on small frames.
//!
//! It may only say "certainly valid, and these are the fields": it returns `None` for anything
//! it is not sure of (escaped keys, duplicated known keys, deep nesting, any error), and the
//! caller then asks serde, which stays the authority on what is valid and on error messages.
//! The one property that matters, "scan accepts ⇒ serde accepts with the same fields", is
//! checked by a property test below and by the `frame_decode` fuzz target.

use serde::de::IgnoredAny;

use crate::wire::{Fields, Text};

/// serde_json's default recursion limit is 128; stay well inside it and let serde judge
/// anything deeper.
const MAX_DEPTH: usize = 64;

/// Scans `frame`; `Some` only when serde would accept it with exactly these fields.
pub(crate) fn scan<'a, M: Text<'a>>(frame: &'a [u8]) -> Option<Fields<'a, M>> {
    // Validating UTF-8 once, up front, lets every string below be sliced without checks.
    let text = std::str::from_utf8(frame).ok()?;
    let mut s = Scanner {
        text,
        b: frame,
        i: 0,
    };
    let mut f = Fields::default();
    // One bit per known field, to spot a field given twice.
    let mut seen = 0u32;
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        s.i += 1;
    } else {
        loop {
            let (start, end, escaped) = s.string()?;
            if escaped {
                return None;
            }
            let slot = Slot::of(&frame[start..end]);
            s.ws();
            s.eat(b':')?;
            s.ws();
            match slot {
                None => s.skip_value(1)?,
                Some(slot) => {
                    // serde rejects a known field given twice, even when one of them is null.
                    let bit = 1u32 << slot as u32;
                    if seen & bit != 0 {
                        return None;
                    }
                    seen |= bit;
                    if !s.literal(b"null") {
                        match slot {
                            Slot::Type => f.ty = Some(s.text()?),
                            Slot::Sender => f.sender = Some(s.text()?),
                            Slot::Receiver => f.receiver = Some(s.text()?),
                            Slot::Message => f.message = Some(s.text()?),
                            Slot::CreateTime => f.create_time = Some(s.f64()?),
                            Slot::Token => f.token = Some(s.text()?),
                            Slot::Version => f.version = Some(s.u64()?),
                            Slot::LastSeq => f.last_seq = Some(s.u64()?),
                            Slot::OldestSeq => f.oldest_seq = Some(s.u64()?),
                            Slot::Id => f.id = Some(s.text()?),
                            Slot::Seq => f.seq = Some(s.u64()?),
                            Slot::Code => f.code = Some(s.text()?),
                            Slot::Kind => f.kind = Some(s.text()?),
                            Slot::User => f.user = Some(s.text()?),
                            Slot::Name => f.name = Some(s.text()?),
                            Slot::Peer => f.peer = Some(s.text()?),
                            Slot::Group => f.group = Some(s.text()?),
                            Slot::UpTo => f.up_to = Some(s.u64()?),
                            Slot::Owner => f.owner = Some(s.text()?),
                            Slot::Online => f.online = Some(s.bool()?),
                        }
                    }
                }
            }
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.ws();
    (s.i == frame.len()).then_some(f)
}

/// The known fields, as [`Fields`] names them.
#[derive(Clone, Copy)]
enum Slot {
    Type,
    Sender,
    Receiver,
    Message,
    CreateTime,
    Token,
    Version,
    LastSeq,
    OldestSeq,
    Id,
    Seq,
    Code,
    Kind,
    User,
    Name,
    Peer,
    Group,
    UpTo,
    Owner,
    Online,
}

impl Slot {
    fn of(key: &[u8]) -> Option<Slot> {
        Some(match key {
            b"type" => Slot::Type,
            b"sender" => Slot::Sender,
            b"receiver" => Slot::Receiver,
            b"message" => Slot::Message,
            b"createTime" => Slot::CreateTime,
            b"token" => Slot::Token,
            b"version" => Slot::Version,
            b"lastSeq" => Slot::LastSeq,
            b"oldestSeq" => Slot::OldestSeq,
            b"id" => Slot::Id,
            b"seq" => Slot::Seq,
            b"code" => Slot::Code,
            b"kind" => Slot::Kind,
            b"user" => Slot::User,
            b"name" => Slot::Name,
            b"peer" => Slot::Peer,
            b"group" => Slot::Group,
            b"upTo" => Slot::UpTo,
            b"owner" => Slot::Owner,
            b"online" => Slot::Online,
            _ => return None,
        })
    }
}

struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let hit = self.b[self.i..].starts_with(word);
        if hit {
            self.i += word.len();
        }
        hit
    }

    /// A string at the cursor: the span of its contents (quotes excluded) and whether it
    /// contains escapes. Escapes are not checked here; whoever uses an escaped string hands
    /// it to serde_json.
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            self.skip_plain();
            match self.next()? {
                b'"' => return Some((start, self.i - 1, escaped)),
                b'\\' => {
                    escaped = true;
                    self.next()?;
                }
                // A raw control character inside a string.
                _ => return None,
            }
        }
    }

    /// Skips bytes that need no attention inside a string (not `"`, `\` or a control
    /// character), eight at a time where it can.
    fn skip_plain(&mut self) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let v = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            // The classic "has a byte less than n" test, for n = 0x20, '"' and '\'.
            let ctrl = v.wrapping_sub(ONES * 0x20) & !v;
            let quote =
                (v ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES) & !(v ^ (ONES * u64::from(b'"')));
            let slash = (v ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES)
                & !(v ^ (ONES * u64::from(b'\\')));
            if (ctrl | quote | slash) & HIGH != 0 {
                break;
            }
            self.i += 8;
        }
        while let Some(c) = self.peek() {
            if c == b'"' || c == b'\\' || c < 0x20 {
                break;
            }
            self.i += 1;
        }
    }

    /// A string value, borrowed from the frame when it has no escapes.
    fn text<T: Text<'a>>(&mut self) -> Option<T> {
        let (start, end, escaped) = self.string()?;
        if escaped {
            serde_json::from_slice(&self.b[start - 1..=end]).ok()
        } else {
            Some(T::plain(&self.text[start..end]))
        }
    }

    /// `true` or `false`.
    fn bool(&mut self) -> Option<bool> {
        if self.literal(b"true") {
            Some(true)
        } else if self.literal(b"false") {
            Some(false)
        } else {
            None
        }
    }

    /// A number, as serde_json would read it into an `f64`.
    fn f64(&mut self) -> Option<f64> {
        let start = self.i;
        self.number()?;
        let n: f64 = self.text[start..self.i].parse().ok()?;
        n.is_finite().then_some(n)
    }

    /// A plain non-negative integer that fits a `u64`. Anything else (a sign, a fraction, an
    /// exponent, an overflow) is left to serde, which rejects most of it.
    fn u64(&mut self) -> Option<u64> {
        let start = self.i;
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        self.text[start..self.i].parse().ok()
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        self.literal(b"-");
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.literal(b".") {
            self.digit()?;
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.digit()?;
            self.digits();
        }
        Some(())
    }

    fn digit(&mut self) -> Option<()> {
        self.next().filter(u8::is_ascii_digit).map(|_| ())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    /// Skips any JSON value (an unknown field's), checking its syntax.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => {
                let (start, end, escaped) = self.string()?;
                if escaped {
                    // Same check serde_json applies to a skipped string.
                    serde_json::from_slice::<IgnoredAny>(&self.b[start - 1..=end]).ok()?;
                }
                Some(())
            }
            b'{' => self.skip_container(b'}', depth, true),
            b'[' => self.skip_container(b']', depth, false),
            b't' => self.literal(b"true").then_some(()),
            b'f' => self.literal(b"false").then_some(()),
            b'n' => self.literal(b"null").then_some(()),
            _ => self.number(),
        }
    }

    fn skip_container(&mut self, close: u8, depth: usize, keyed: bool) -> Option<()> {
        self.i += 1;
        self.ws();
        if self.peek()? == close {
            self.i += 1;
            return Some(());
        }
        loop {
            if keyed {
                self.peek().filter(|&c| c == b'"')?;
                self.skip_value(depth + 1)?;
                self.ws();
                self.eat(b':')?;
                self.ws();
            }
            self.skip_value(depth + 1)?;
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                c if c == close => return Some(()),
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serde_fields(frame: &[u8]) -> Option<Fields<'_, String>> {
        serde_json::from_slice(frame).ok()
    }

    fn check(frame: &[u8]) -> Result<(), TestCaseError> {
        if let Some(fast) = scan::<String>(frame) {
            let slow = serde_fields(frame);
            prop_assert_eq!(
                Some(fast),
                slow,
                "scan accepted {:?}",
                String::from_utf8_lossy(frame)
            );
        }
        Ok(())
    }

    /// JSON fragments that exercise every branch of the scanner.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(r#""type":"Message""#.to_string()),
            Just(r#""type":"Regist""#.to_string()),
            Just(r#""sender":"1""#.to_string()),
            Just(r#""receiver":"\u0032""#.to_string()),
            Just(r#""sender":null"#.to_string()),
            Just(r#""sen\u0064er":"9""#.to_string()),
            Just(r#""createTime":1700000000"#.to_string()),
            Just(r#""createTime":-0.5e-3"#.to_string()),
            Just(r#""createTime":1e400"#.to_string()),
            Just(r#""createTime":"1""#.to_string()),
            Just(r#""x":[1,{"a":[true,false,null,"\n"]},-0,2.5E+2]"#.to_string()),
            Just(r#""x":"\ud800""#.to_string()),
            Just(r#""message":"\ud83d\ude00 \u003c""#.to_string()),
            Just(r#""message":"\ud800""#.to_string()),
            Just(r#""message":"a\qb""#.to_string()),
            Just(r#""message":5"#.to_string()),
            Just(r#""type":"Ack""#.to_string()),
            Just(r#""type":"Error""#.to_string()),
            Just(r#""seq":57"#.to_string()),
            Just(r#""seq":0"#.to_string()),
            Just(r#""seq":-1"#.to_string()),
            Just(r#""seq":-0"#.to_string()),
            Just(r#""seq":01"#.to_string()),
            Just(r#""seq":1.0"#.to_string()),
            Just(r#""seq":1e2"#.to_string()),
            Just(r#""lastSeq":18446744073709551615"#.to_string()),
            Just(r#""lastSeq":18446744073709551616"#.to_string()),
            Just(r#""version":2"#.to_string()),
            Just(r#""token":"abc""#.to_string()),
            Just(r#""id":"c-1""#.to_string()),
            Just(r#""code":"bad_json""#.to_string()),
            Just(r#""type":"Event""#.to_string()),
            Just(r#""type":"Read""#.to_string()),
            Just(r#""kind":"friend_request""#.to_string()),
            Just(r#""user":"9""#.to_string()),
            Just(r#""name":"Néo""#.to_string()),
            Just(r#""peer":"9""#.to_string()),
            Just(r#""peer":"g12""#.to_string()),
            Just(r#""type":"Typing""#.to_string()),
            Just(r#""type":"Presence""#.to_string()),
            Just(r#""group":"g12""#.to_string()),
            Just(r#""upTo":41"#.to_string()),
            Just(r#""oldestSeq":30"#.to_string()),
            Just(r#""upTo":true"#.to_string()),
            Just(r#""owner":"7""#.to_string()),
            Just(r#""online":true"#.to_string()),
            Just(r#""online":false"#.to_string()),
            Just(r#""online":1"#.to_string()),
            Just(r#""online":tru"#.to_string()),
            any::<String>()
                .prop_map(|t| format!(r#""message":{}"#, serde_json::to_string(&t).unwrap())),
            "[ -~]{0,12}",
        ]
    }

    proptest! {
        #[test]
        fn scan_accepts_only_what_serde_accepts_identically(
            pieces in proptest::collection::vec(piece(), 0..7),
            seps in proptest::collection::vec(prop_oneof![Just(","), Just(" , "), Just(",\n"), Just(""), Just(":")], 7),
        ) {
            let mut frame = String::from("{");
            for (i, p) in pieces.iter().enumerate() {
                if i > 0 {
                    frame.push_str(seps[i]);
                }
                frame.push_str(p);
            }
            frame.push_str(" }");
            check(frame.as_bytes())?;
        }

        #[test]
        fn scan_on_mutated_frames_agrees_with_serde(
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut frame = br#"{"type":"Message","message":"h\u00e9 <x>","sender":"1","receiver":"2","createTime":1.5,"id":["c",{"d":1}]}"#.to_vec();
            let i = at.index(frame.len());
            frame[i] = byte;
            check(&frame)?;
            frame.insert(i, byte);
            check(&frame)?;
            frame.truncate(i);
            check(&frame)?;
        }

        #[test]
        fn scan_on_arbitrary_bytes_agrees_with_serde(frame in proptest::collection::vec(any::<u8>(), 0..64)) {
            check(&frame)?;
        }
    }

    #[test]
    fn scan_takes_the_common_frames() {
        let go = r#"{"type":"Message","message":"\u003cb\u003e 你好","sender":"1","receiver":"2","createTime":1700000000}"#;
        let f = scan::<String>(go.as_bytes()).expect("fast path");
        assert_eq!(f.message.as_deref(), Some("<b> 你好"));
        assert!(scan::<String>(br#" { "type" : "Regist" , "sender" : "1" } "#).is_some());
    }
}
