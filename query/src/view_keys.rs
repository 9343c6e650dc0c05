//! A small map from 16-byte keys to numbers, for the per-batch work of the lookup join and
//! the low-cardinality group-by.
//!
//! Its keys are mostly `Utf8View` views. A view holds its string when the string has at
//! most 12 bytes and otherwise its length, prefix, buffer and offset, so within one array
//! equal views are equal strings (the converse does not hold for long strings: two copies
//! of one string may sit in two places; callers resolve each distinct view to its string
//! once, so that only costs a second look-up). Hashing a view is one multiply where
//! hashing the string walks its bytes.

/// A slot not yet used.
const EMPTY: u32 = u32::MAX;

/// An open-addressing table from `u128` keys to `u32` numbers below `u32::MAX`.
pub(crate) struct ViewKeys {
    keys: Vec<u128>,
    numbers: Vec<u32>,
    used: usize,
    /// 64 minus the table's size in bits: the hash's top bits pick the slot.
    shift: u32,
}

impl Default for ViewKeys {
    fn default() -> Self {
        Self::with_slots(64)
    }
}

impl ViewKeys {
    fn with_slots(slots: usize) -> Self {
        Self {
            keys: vec![0; slots],
            numbers: vec![EMPTY; slots],
            used: 0,
            shift: 64 - slots.trailing_zeros(),
        }
    }

    /// How many keys the table holds.
    pub(crate) fn len(&self) -> usize {
        self.used
    }

    /// Forgets every key (for the next batch, whose views mean other strings).
    pub(crate) fn clear(&mut self) {
        if self.used > 0 {
            self.numbers.fill(EMPTY);
            self.used = 0;
        }
    }

    #[inline]
    fn slot(&self, key: u128) -> usize {
        // Fold the halves and keep the top bits of a Fibonacci multiply.
        let folded = (key as u64) ^ ((key >> 64) as u64).rotate_left(31);
        (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// The number of `key`, given by `number_of_new` the first time the key is seen (it
    /// must not return `u32::MAX`).
    #[inline]
    pub(crate) fn find_or_insert(&mut self, key: u128, number_of_new: impl FnOnce() -> u32) -> u32 {
        let mask = self.numbers.len() - 1;
        let mut at = self.slot(key);
        loop {
            let number = self.numbers[at];
            if number == EMPTY {
                let number = number_of_new();
                self.keys[at] = key;
                self.numbers[at] = number;
                self.used += 1;
                if self.used * 2 > self.numbers.len() {
                    self.grow();
                }
                return number;
            }
            if self.keys[at] == key {
                return number;
            }
            at = (at + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let mut larger = Self::with_slots(self.numbers.len() * 2);
        for (&key, &number) in self.keys.iter().zip(&self.numbers) {
            if number != EMPTY {
                larger.find_or_insert(key, || number);
            }
        }
        *self = larger;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table grows past its first size and still finds every key; clearing forgets them.
    #[test]
    fn grows_finds_every_key_and_clears() {
        let mut table = ViewKeys::default();
        let key = |n: u128| n << 70 | n;
        for n in 0..1000u128 {
            assert_eq!(
                table.find_or_insert(key(n), || (n % 977) as u32),
                (n % 977) as u32
            );
        }
        for n in 0..1000u128 {
            assert_eq!(table.find_or_insert(key(n), || 5), (n % 977) as u32);
        }
        assert_eq!(table.len(), 1000);
        table.clear();
        assert_eq!(table.len(), 0);
        assert_eq!(table.find_or_insert(key(3), || 7), 7);
    }
}
