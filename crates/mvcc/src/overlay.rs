//! A view of a snapshot with a command's own mutations laid over it, so that the ops of one
//! transaction see the earlier ops of that transaction (as in etcd: a get after a put in the
//! same branch sees the put) before anything is written.

use crate::error::Result;
use crate::view::{ColumnFamily, Cursor, Mutation, MvccView};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;

/// Mutations laid over a view, by column family and key; `None` is a deletion.
type Pending = BTreeMap<(ColumnFamily, Vec<u8>), Option<Vec<u8>>>;

/// `base` with `pending` mutations applied on top (a `None` value is a deletion). Mutations
/// are added as the command produces them; cursors opened afterwards see them.
pub struct Overlay<'v, V> {
    base: &'v V,
    pending: RefCell<Pending>,
}

impl<'v, V: MvccView> Overlay<'v, V> {
    pub fn new(base: &'v V) -> Self {
        Self {
            base,
            pending: RefCell::default(),
        }
    }

    /// Lays `mutations` over the view (later ones win).
    pub fn apply<'m>(&self, mutations: impl IntoIterator<Item = &'m Mutation>) {
        let mut pending = self.pending.borrow_mut();
        for mutation in mutations {
            match mutation {
                Mutation::Put { cf, key, value } => {
                    pending.insert((*cf, key.clone()), Some(value.clone()));
                }
                Mutation::Delete { cf, key } => {
                    pending.insert((*cf, key.clone()), None);
                }
            }
        }
    }
}

/// Merges the base cursor with the pending entries of its bounds (copied when the cursor is
/// opened: a command's own mutations are few, bounded by its op limits).
pub struct OverlayCursor<C> {
    base: C,
    pending: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// The first pending entry not yet passed.
    next_pending: usize,
    current: Current,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Current {
    Base,
    Pending(usize),
    End,
}

impl<C: Cursor> OverlayCursor<C> {
    /// Positions on the smaller of the base's entry and the next pending one; a pending entry
    /// hides the base's entry of the same key, and a pending deletion hides it altogether.
    fn settle(&mut self) -> Result<()> {
        loop {
            let pending = self.pending.get(self.next_pending);
            let base_key = self.base.current().map(|(key, _)| key);
            match (pending, base_key) {
                (None, None) => {
                    self.current = Current::End;
                    return Ok(());
                }
                (Some((key, value)), base_key)
                    if base_key.is_none_or(|base| key.as_slice() <= base) =>
                {
                    if value.is_some() {
                        self.current = Current::Pending(self.next_pending);
                        return Ok(());
                    }
                    if base_key == Some(key.as_slice()) {
                        self.base.next()?;
                    }
                    self.next_pending += 1;
                }
                _ => {
                    self.current = Current::Base;
                    return Ok(());
                }
            }
        }
    }
}

impl<C: Cursor> Cursor for OverlayCursor<C> {
    fn seek(&mut self, key: &[u8]) -> Result<()> {
        self.base.seek(key)?;
        self.next_pending = self
            .pending
            .partition_point(|(pending, _)| pending.as_slice() < key);
        self.settle()
    }

    fn next(&mut self) -> Result<()> {
        match self.current {
            Current::End => return Ok(()),
            Current::Base => self.base.next()?,
            Current::Pending(index) => {
                let shadowed = self
                    .base
                    .current()
                    .is_some_and(|(key, _)| key == self.pending[index].0.as_slice());
                if shadowed {
                    self.base.next()?;
                }
                self.next_pending = index + 1;
            }
        }
        self.settle()
    }

    fn current(&self) -> Option<(&[u8], &[u8])> {
        match self.current {
            Current::End => None,
            Current::Base => self.base.current(),
            Current::Pending(index) => {
                let (key, value) = &self.pending[index];
                value.as_deref().map(|value| (key.as_slice(), value))
            }
        }
    }
}

impl<V: MvccView> MvccView for Overlay<'_, V> {
    type Cursor<'a>
        = OverlayCursor<V::Cursor<'a>>
    where
        Self: 'a;

    fn cursor(
        &self,
        cf: ColumnFamily,
        lower: &[u8],
        upper: &[u8],
        point: bool,
    ) -> Result<Self::Cursor<'_>> {
        let pending = self
            .pending
            .borrow()
            .range::<(ColumnFamily, Vec<u8>), _>((
                Bound::Included(&(cf, lower.to_vec())),
                Bound::Excluded(&(cf, upper.to_vec())),
            ))
            .map(|((_, key), value)| (key.clone(), value.clone()))
            .collect();
        Ok(OverlayCursor {
            base: self.base.cursor(cf, lower, upper, point)?,
            pending,
            next_pending: 0,
            current: Current::End,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::MemoryView;
    use proptest::prelude::*;

    fn scan<V: MvccView>(
        view: &V,
        lower: &[u8],
        upper: &[u8],
        from: &[u8],
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut cursor = view
            .cursor(ColumnFamily::Write, lower, upper, false)
            .unwrap();
        cursor.seek(from).unwrap();
        let mut out = Vec::new();
        while let Some((key, value)) = cursor.current() {
            out.push((key.to_vec(), value.to_vec()));
            cursor.next().unwrap();
        }
        out
    }

    fn mutation(cf: ColumnFamily) -> impl Strategy<Value = Mutation> {
        (0u8..12, proptest::option::of(0u8..4)).prop_map(move |(key, value)| match value {
            Some(value) => Mutation::Put {
                cf,
                key: vec![key],
                value: vec![value],
            },
            None => Mutation::Delete { cf, key: vec![key] },
        })
    }

    proptest! {
        /// The overlay reads exactly as the base with the mutations written would.
        #[test]
        fn the_overlay_reads_as_the_base_with_the_mutations_applied(
            base in proptest::collection::vec(mutation(ColumnFamily::Write), 0..16),
            other_family in proptest::collection::vec(mutation(ColumnFamily::Lock), 0..4),
            laid in proptest::collection::vec(mutation(ColumnFamily::Write), 0..16),
            lower in 0u8..12,
            width in 0u8..14,
            from in 0u8..14,
        ) {
            let mut base_view = MemoryView::default();
            base_view.apply(base);
            let overlay = Overlay::new(&base_view);
            overlay.apply(&laid);
            overlay.apply(&other_family);
            let mut expected = base_view.clone();
            expected.apply(laid);
            let (lower, upper) = ([lower], [lower.saturating_add(width)]);
            prop_assert_eq!(
                scan(&overlay, &lower, &upper, &[from]),
                scan(&expected, &lower, &upper, &[from])
            );
        }
    }

    #[test]
    fn mutations_laid_after_a_cursor_opened_are_seen_by_the_next_cursor() {
        let mut base = MemoryView::default();
        base.apply([Mutation::Put {
            cf: ColumnFamily::Write,
            key: b"a".to_vec(),
            value: b"1".to_vec(),
        }]);
        let overlay = Overlay::new(&base);
        assert_eq!(scan(&overlay, b"", b"z", b"").len(), 1);
        overlay.apply(&[
            Mutation::Put {
                cf: ColumnFamily::Write,
                key: b"b".to_vec(),
                value: b"2".to_vec(),
            },
            Mutation::Delete {
                cf: ColumnFamily::Write,
                key: b"a".to_vec(),
            },
        ]);
        assert_eq!(
            scan(&overlay, b"", b"z", b""),
            vec![(b"b".to_vec(), b"2".to_vec())]
        );
    }
}
