//! One result per event, in order. Names are the snake_case words of the API.

macro_rules! result_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant),*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),*
                }
            }

            pub fn from_name(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }

            pub fn is_ok(self) -> bool {
                matches!(self, $name::Ok)
            }

            /// `exists`: the event was already applied (a retry), nothing changed.
            pub fn is_exists(self) -> bool {
                matches!(self, $name::Exists)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

result_enum!(
    /// The outcome of one account in a `create_accounts` batch.
    CreateAccountResult {
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
    /// The outcome of one transfer in a `create_transfers` batch.
    CreateTransferResult {
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
        ExternalTransferTimeoutMustBeZero => "external_transfer_timeout_must_be_zero",
        ExternalTransferMustNotClose => "external_transfer_must_not_close",
        PendingTransferIsExternal => "pending_transfer_is_external",
    }
);

impl CreateTransferResult {
    /// A refusal that depends on the ledger's state at the time (an account or pending transfer
    /// missing, a balance limit, a closed account): a later retry with the same id could succeed,
    /// so the id is reserved as failed (`id_already_failed`) rather than left free. Refusals
    /// that depend on the event alone answer the same on every retry and reserve nothing.
    pub fn is_transient(self) -> bool {
        use CreateTransferResult as R;
        matches!(
            self,
            R::DebitAccountNotFound
                | R::CreditAccountNotFound
                | R::PendingTransferNotFound
                | R::ExceedsCredits
                | R::ExceedsDebits
                | R::DebitAccountAlreadyClosed
                | R::CreditAccountAlreadyClosed
        )
    }
}
