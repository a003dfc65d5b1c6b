//! A FIFO of a state machine's outputs that holds no heap memory while it
//! is empty or holds one item.
//!
//! The drivers drain the outputs after every input, so a queue rarely holds
//! more than one: the first item sits inline, and only a burst (frames
//! released together behind a hello, a close after an event) spills into a
//! `VecDeque`, which is given back once it has been drained. An idle socket
//! thus keeps no queue capacity (a `VecDeque` keeps the capacity of its
//! first use: 4 slots, 448 bytes for [`HubConnEvent`](super::HubConnEvent)s).

use std::collections::VecDeque;

#[derive(Debug)]
pub(crate) struct Outputs<T> {
    /// The oldest item; `None` only when the queue is empty.
    first: Option<T>,
    /// The items after `first`, in order.
    rest: VecDeque<T>,
}

impl<T> Default for Outputs<T> {
    fn default() -> Self {
        Self {
            first: None,
            rest: VecDeque::new(),
        }
    }
}

impl<T> Outputs<T> {
    pub(crate) fn push_back(&mut self, item: T) {
        if self.first.is_none() {
            self.first = Some(item);
        } else {
            self.rest.push_back(item);
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<T> {
        let item = self.first.take()?;
        self.first = self.rest.pop_front();
        if self.first.is_none() && self.rest.capacity() > 0 {
            self.rest = VecDeque::new();
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::Outputs;

    #[test]
    fn items_come_out_in_the_order_they_went_in_and_a_drained_burst_is_given_back() {
        let mut q = Outputs::default();
        q.push_back(1);
        assert_eq!(q.pop_front(), Some(1));
        assert_eq!(q.pop_front(), None);
        for i in 0..10 {
            q.push_back(i);
        }
        assert_eq!(q.pop_front(), Some(0));
        q.push_back(10);
        let rest: Vec<_> = std::iter::from_fn(|| q.pop_front()).collect();
        assert_eq!(rest, (1..=10).collect::<Vec<_>>());
        assert_eq!(q.rest.capacity(), 0);
        assert!(q.first.is_none());
    }
}
