//! A linearizability checker for recorded key-value histories.
//!
//! A history is a list of operations, each with the time its call started and the time its
//! answer arrived — or no answer at all when the outcome is unknown (a timeout, a lost
//! connection): such an operation may have taken effect at any moment after its call, or
//! never. The history is linearizable if every operation can be placed at one instant
//! between its call and its return so that the sequence is legal for a single register per
//! key. Keys are independent, so the history is checked key by key (P-compositionality).
//!
//! The search is Wing & Gong's with Lowe's memoisation, as in porcupine: walk the call and
//! return events in time order; try to linearize each pending call whose effect matches the
//! model; when a return is reached whose operation is not yet linearized, backtrack. States
//! already explored with the same set of linearized operations are skipped. Operations with
//! unknown outcomes return "at infinity", so they may also be placed after everything else,
//! where their effect is never observed — that is how "it never happened" is modelled.

//!
//! [`check_revision_order`] checks what the per-key search cannot: that revisions rise in
//! real time across every key.
//!
//! [`check_list_append`] checks multi-key transactions instead, Elle-style: histories of
//! appends to and reads of lists, searched for dependency cycles (`list_append`).

mod list_append;
mod register;
mod revision_order;

pub use list_append::{
    check_list_append, Anomaly, CycleKind, Edge, MicroOp, Outcome, Report, Step, Transaction,
    TxnId, ANOMALIES_PER_KIND_MAX, SEARCH_STEPS_MAX,
};
pub use register::{check_history, Input, Operation, Output, Verdict};
pub use revision_order::{check_revision_order, RevisionOrderViolation};
