//! Reading a fuzz input as a sequence of choices.
//!
//! Every read succeeds: past the end it yields zeros and empty slices, so
//! any byte string is a valid program and libFuzzer's mutations stay
//! meaningful.

/// A cursor over the fuzzer's bytes.
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads `data` from the start.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte (0 past the end).
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// The next byte's low bit.
    pub fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// One of `items` (which must not be empty).
    pub fn choose<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[usize::from(self.byte()) % items.len()]
    }

    /// A length byte (at most `max`), then that many bytes (fewer at the end).
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let len = (usize::from(self.u16())).min(max).min(self.data.len());
        let (head, rest) = self.data.split_at(len);
        self.data = rest;
        head
    }

    /// Like [`bytes`](Self::bytes), decoded as UTF-8 with replacements.
    pub fn text(&mut self, max: usize) -> String {
        String::from_utf8_lossy(self.bytes(max)).into_owned()
    }
}

/// How far a harness moves its clock before `handle_timeout`: to the next
/// deadline, just past it, or an arbitrary step (in milliseconds).
pub fn time_step(
    input: &mut Input<'_>,
    now: std::time::Instant,
    deadline: Option<std::time::Instant>,
) -> u64 {
    match (input.byte() % 3, deadline) {
        (0, Some(at)) => at.saturating_duration_since(now).as_millis() as u64,
        (1, Some(at)) => at.saturating_duration_since(now).as_millis() as u64 + 1,
        _ => u64::from(input.u16()),
    }
}

/// After `handle_timeout(now)`, no timer may still be due.
pub fn assert_no_timer_due(next: Option<std::time::Instant>, now: std::time::Instant) {
    if let Some(at) = next {
        assert!(at > now, "a timer is still due after handle_timeout");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_as_zeros() {
        let mut input = Input::new(&[7, 3, 0, b'a', b'b']);
        assert_eq!(input.byte(), 7);
        assert_eq!(input.bytes(10), b"ab"); // length 3, two left
        assert!(input.is_empty());
        assert_eq!((input.byte(), input.u16(), input.bool()), (0, 0, false));
        assert_eq!(input.bytes(10), b"");
        assert_eq!(*input.choose(&["x", "y"]), "x");
    }
}
