//! What the ledger answered for each event of a batch, and the retry rule for `exists`.

use std::fmt;

macro_rules! result_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:expr,)* }) => {
        $(#[$doc])*
        ///
        /// The variants are the ledger's result words (`docs/api.md` gives their precedence);
        /// a word this version does not know (from a newer server) is kept as `Other`.
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)*
            Other(String),
        }

        impl $name {
            /// The word the API uses.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)*
                    $name::Other(word) => word,
                }
            }

            /// The result of the API's word.
            pub fn from_word(word: &str) -> $name {
                match word {
                    $($text => $name::$variant,)*
                    other => $name::Other(other.to_string()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl EventResult for $name {
            fn from_word(word: &str) -> Self {
                $name::from_word(word)
            }
            fn is_ok(&self) -> bool {
                *self == $name::Ok
            }
            fn is_exists(&self) -> bool {
                *self == $name::Exists
            }
            fn ok() -> Self {
                $name::Ok
            }
        }
    };
}

/// The results of one event kind, for [`Created`].
pub trait EventResult: Clone + fmt::Debug + PartialEq {
    fn from_word(word: &str) -> Self;
    fn is_ok(&self) -> bool;
    fn is_exists(&self) -> bool;
    fn ok() -> Self;
}

result_enum!(
    /// The result of one account of `create_accounts`.
    AccountResult {
        Ok => "ok",
        LinkedEventFailed => "linked_event_failed",
        LinkedEventChainOpen => "linked_event_chain_open",
        ImportedEventExpected => "imported_event_expected",
        ImportedEventNotExpected => "imported_event_not_expected",
        TimestampMustBeZero => "timestamp_must_be_zero",
        ImportedEventTimestampOutOfRange => "imported_event_timestamp_out_of_range",
        ImportedEventTimestampMustNotAdvance => "imported_event_timestamp_must_not_advance",
        IdMustNotBeZero => "id_must_not_be_zero",
        IdMustNotBeIntMax => "id_must_not_be_int_max",
        ReservedFlag => "reserved_flag",
        FlagsAreMutuallyExclusive => "flags_are_mutually_exclusive",
        LedgerMustNotBeZero => "ledger_must_not_be_zero",
        CodeMustNotBeZero => "code_must_not_be_zero",
        Exists => "exists",
        ExistsWithDifferentFields => "exists_with_different_fields",
        ImportedEventTimestampMustNotRegress => "imported_event_timestamp_must_not_regress",
    }
);

result_enum!(
    /// The result of one transfer of `create_transfers`.
    TransferResult {
        Ok => "ok",
        LinkedEventFailed => "linked_event_failed",
        LinkedEventChainOpen => "linked_event_chain_open",
        ImportedEventExpected => "imported_event_expected",
        ImportedEventNotExpected => "imported_event_not_expected",
        TimestampMustBeZero => "timestamp_must_be_zero",
        ImportedEventTimestampOutOfRange => "imported_event_timestamp_out_of_range",
        ImportedEventTimestampMustNotAdvance => "imported_event_timestamp_must_not_advance",
        IdMustNotBeZero => "id_must_not_be_zero",
        IdMustNotBeIntMax => "id_must_not_be_int_max",
        IdAlreadyFailed => "id_already_failed",
        ReservedFlag => "reserved_flag",
        FlagsAreMutuallyExclusive => "flags_are_mutually_exclusive",
        DebitAccountIdMustNotBeZero => "debit_account_id_must_not_be_zero",
        DebitAccountIdMustNotBeIntMax => "debit_account_id_must_not_be_int_max",
        CreditAccountIdMustNotBeZero => "credit_account_id_must_not_be_zero",
        CreditAccountIdMustNotBeIntMax => "credit_account_id_must_not_be_int_max",
        AccountsMustBeDifferent => "accounts_must_be_different",
        PendingIdMustBeZero => "pending_id_must_be_zero",
        PendingIdMustNotBeZero => "pending_id_must_not_be_zero",
        PendingIdMustNotBeIntMax => "pending_id_must_not_be_int_max",
        PendingIdMustBeDifferent => "pending_id_must_be_different",
        TimeoutReservedForPendingTransfer => "timeout_reserved_for_pending_transfer",
        ClosingTransferMustBePending => "closing_transfer_must_be_pending",
        LedgerMustNotBeZero => "ledger_must_not_be_zero",
        CodeMustNotBeZero => "code_must_not_be_zero",
        DebitAccountNotFound => "debit_account_not_found",
        CreditAccountNotFound => "credit_account_not_found",
        LedgerMustMatch => "ledger_must_match",
        DebitAccountAlreadyClosed => "debit_account_already_closed",
        CreditAccountAlreadyClosed => "credit_account_already_closed",
        PendingTransferNotFound => "pending_transfer_not_found",
        PendingTransferNotPending => "pending_transfer_not_pending",
        PendingTransferHasDifferentDebitAccountId => "pending_transfer_has_different_debit_account_id",
        PendingTransferHasDifferentCreditAccountId => "pending_transfer_has_different_credit_account_id",
        PendingTransferHasDifferentLedger => "pending_transfer_has_different_ledger",
        PendingTransferHasDifferentCode => "pending_transfer_has_different_code",
        ExceedsPendingTransferAmount => "exceeds_pending_transfer_amount",
        PendingTransferHasDifferentAmount => "pending_transfer_has_different_amount",
        Exists => "exists",
        ExistsWithDifferentFields => "exists_with_different_fields",
        PendingTransferAlreadyPosted => "pending_transfer_already_posted",
        PendingTransferAlreadyVoided => "pending_transfer_already_voided",
        PendingTransferExpired => "pending_transfer_expired",
        OverflowsDebitsPending => "overflows_debits_pending",
        OverflowsCreditsPending => "overflows_credits_pending",
        OverflowsDebitsPosted => "overflows_debits_posted",
        OverflowsCreditsPosted => "overflows_credits_posted",
        OverflowsDebits => "overflows_debits",
        OverflowsCredits => "overflows_credits",
        OverflowsTimeout => "overflows_timeout",
        ExceedsCredits => "exceeds_credits",
        ExceedsDebits => "exceeds_debits",
        ImportedEventTimestampMustNotRegress => "imported_event_timestamp_must_not_regress",
        ImportedEventTimeoutMustBeZero => "imported_event_timeout_must_be_zero",
    }
);

/// One event's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome<R> {
    /// The ledger's result, with one rewrite: see [`Outcome::earlier_attempt`].
    pub result: R,
    /// The event was applied by an earlier attempt of this same call, whose answer was lost
    /// (or said the outcome was unknown): the retry (same ids, same fields) was answered
    /// `exists`, which the client reports as `Ok` with this set. It was applied once; nothing
    /// was created twice.
    pub earlier_attempt: bool,
}

/// The answer to a batch: one outcome per event, in the batch's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created<R> {
    pub outcomes: Vec<Outcome<R>>,
    /// How many times the batch was sent (1: no retry).
    pub attempts: u32,
}

impl<R: EventResult> Created<R> {
    /// Whether every event is `Ok` (applied now or by an earlier attempt).
    pub fn all_ok(&self) -> bool {
        self.outcomes.iter().all(|o| o.result.is_ok())
    }

    /// The results only, in the batch's order.
    pub fn results(&self) -> impl Iterator<Item = &R> {
        self.outcomes.iter().map(|o| &o.result)
    }

    /// The events that are not `Ok`: their index in the batch and result.
    pub fn failures(&self) -> impl Iterator<Item = (usize, &R)> {
        self.results().enumerate().filter(|(_, r)| !r.is_ok())
    }

    /// The outcomes of `words` (the answer's results by index) for a batch of `events` sent
    /// `attempts` times. `exists` after an attempt that may have been applied means that
    /// attempt applied the event (a retry resends the same ids and fields, and the ledger
    /// answers `exists` only to an event equal to the one it holds), so it becomes `Ok` with
    /// `earlier_attempt`. Otherwise `exists` stays `Exists`: the id was used before this call.
    pub(crate) fn from_words(
        events: usize,
        words: Vec<(usize, String)>,
        attempts: u32,
        earlier_maybe_applied: bool,
    ) -> Result<Created<R>, String> {
        let mut results: Vec<Option<R>> = vec![None; events];
        for (index, word) in words {
            let slot = results
                .get_mut(index)
                .ok_or(format!("a result for event {index} of a batch of {events}"))?;
            *slot = Some(R::from_word(&word));
        }
        let outcomes = results
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let result = r.ok_or(format!("no result for event {i}"))?;
                Ok(if earlier_maybe_applied && result.is_exists() {
                    Outcome {
                        result: R::ok(),
                        earlier_attempt: true,
                    }
                } else {
                    Outcome {
                        result,
                        earlier_attempt: false,
                    }
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Created { outcomes, attempts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exists_on_a_retry_is_ok_by_an_earlier_attempt_and_unknown_words_are_kept() {
        let words = vec![(0, "exists".to_string()), (1, "a_new_rule".to_string())];
        let first: Created<TransferResult> =
            Created::from_words(2, words.clone(), 1, false).unwrap();
        assert_eq!(first.outcomes[0].result, TransferResult::Exists);
        assert_eq!(
            first.outcomes[1].result,
            TransferResult::Other("a_new_rule".into())
        );
        let retried: Created<TransferResult> =
            Created::from_words(2, words.clone(), 2, true).unwrap();
        assert_eq!(
            retried.outcomes[0],
            Outcome {
                result: TransferResult::Ok,
                earlier_attempt: true
            }
        );
        // A retry after a refusal that proves nothing was applied: the id was taken before.
        let refused_first: Created<TransferResult> =
            Created::from_words(2, words, 2, false).unwrap();
        assert_eq!(refused_first.outcomes[0].result, TransferResult::Exists);
        assert!(Created::<AccountResult>::from_words(2, vec![(0, "ok".into())], 1, false).is_err());
        assert_eq!(
            TransferResult::from_word("exceeds_credits").as_str(),
            "exceeds_credits"
        );
    }
}
