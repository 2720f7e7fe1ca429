//! The data model: ids, flags, accounts and transfers, as stored and as submitted.

use std::fmt;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident($int:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $int);

        impl $name {
            pub const ZERO: $name = $name(0);
            pub const MAX: $name = $name(<$int>::MAX);
            pub fn is_zero(self) -> bool {
                self.0 == 0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_newtype!(
    /// Client-chosen account id, 128 bits so that ULIDs and UUIDs serve as ids; 0 and
    /// `u128::MAX` are reserved.
    AccountId(u128)
);
id_newtype!(
    /// Client-chosen transfer id, 128 bits; 0 and `u128::MAX` are reserved.
    TransferId(u128)
);
id_newtype!(
    /// Nanoseconds assigned by the leader when it proposes a batch; strictly increasing across the cluster.
    Timestamp(u64)
);

/// A set of named flags stored as bits. Each flag type lists its names so that the API
/// can turn `["linked","pending"]` into bits and back without a second table.
pub trait FlagSet: Copy {
    const NAMES: &'static [(&'static str, u16)];
    fn bits(self) -> u16;
    fn from_bits_retain(bits: u16) -> Self;

    fn from_name(name: &str) -> Option<u16> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| *b)
    }

    fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(_, b)| self.bits() & b != 0)
            .map(|(n, _)| *n)
            .collect()
    }

    /// Bits set that no flag of this type names.
    fn reserved_bits(self) -> u16 {
        let known = Self::NAMES.iter().fold(0, |acc, (_, b)| acc | b);
        self.bits() & !known
    }
}

macro_rules! flags_newtype {
    ($name:ident { $($flag:ident = $bit:expr => $text:literal),* $(,)? }) => {
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name(u16);

        impl $name {
            $(pub const $flag: $name = $name($bit);)*
            pub const fn empty() -> Self {
                $name(0)
            }
            pub const fn contains(self, other: $name) -> bool {
                self.0 & other.0 == other.0 && other.0 != 0
            }
            pub const fn union(self, other: $name) -> $name {
                $name(self.0 | other.0)
            }
        }

        impl FlagSet for $name {
            const NAMES: &'static [(&'static str, u16)] = &[$(($text, $bit)),*];
            fn bits(self) -> u16 {
                self.0
            }
            fn from_bits_retain(bits: u16) -> Self {
                $name(bits)
            }
        }

        impl std::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, rhs: $name) -> $name {
                self.union(rhs)
            }
        }
    };
}

flags_newtype!(AccountFlags {
    LINKED = 1 => "linked",
    DEBITS_MUST_NOT_EXCEED_CREDITS = 2 => "debits_must_not_exceed_credits",
    CREDITS_MUST_NOT_EXCEED_DEBITS = 4 => "credits_must_not_exceed_debits",
    HISTORY = 8 => "history",
    CLOSED = 16 => "closed",
    IMPORTED = 32 => "imported",
    EXTERNAL = 64 => "external",
});

flags_newtype!(TransferFlags {
    LINKED = 1 => "linked",
    PENDING = 2 => "pending",
    POST_PENDING_TRANSFER = 4 => "post_pending_transfer",
    VOID_PENDING_TRANSFER = 8 => "void_pending_transfer",
    BALANCING_DEBIT = 16 => "balancing_debit",
    BALANCING_CREDIT = 32 => "balancing_credit",
    CLOSING_DEBIT = 64 => "closing_debit",
    CLOSING_CREDIT = 128 => "closing_credit",
    IMPORTED = 256 => "imported",
});

/// An account as a client submits it: balances and timestamp are the server's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NewAccount {
    pub id: AccountId,
    pub ledger: u32,
    pub code: u16,
    pub flags: AccountFlags,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    /// 0, unless `imported`: then the account's timestamp in the system it is migrated from.
    pub timestamp: Timestamp,
}

/// An account as stored, with the balances only transfers change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub ledger: u32,
    pub code: u16,
    pub flags: AccountFlags,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub debits_pending: Amount,
    pub debits_posted: Amount,
    pub credits_pending: Amount,
    pub credits_posted: Amount,
    pub timestamp: Timestamp,
}

impl Account {
    pub fn balances(&self) -> Balances {
        Balances {
            debits_pending: self.debits_pending,
            debits_posted: self.debits_posted,
            credits_pending: self.credits_pending,
            credits_posted: self.credits_posted,
        }
    }
}

/// The four balances of an account at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balances {
    pub debits_pending: Amount,
    pub debits_posted: Amount,
    pub credits_pending: Amount,
    pub credits_posted: Amount,
}

/// One balance-changing event, as the change feed gives it: a transfer (single-phase, pending,
/// post or void) or the expiry of a pending transfer, with both accounts' balances right after
/// it. The accounts are the transfer's (for an expiry, the pending transfer's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// The event's timestamp: the transfer's, or the expiry's own.
    pub timestamp: Timestamp,
    /// The transfer; for an expiry, the pending transfer that expired.
    pub transfer: TransferId,
    /// The event is the expiry of `transfer`.
    pub expired: bool,
    pub debit: Balances,
    pub credit: Balances,
}

/// A transfer as a client submits it. For `post_pending_transfer` and `void_pending_transfer`,
/// zero accounts, ledger, code and user data mean "as the pending transfer"; a post's amount
/// [`AMOUNT_MAX`] and a void's amount 0 mean the pending transfer's full amount. For
/// `balancing_debit`/`balancing_credit`, `amount` is the most to move, 0 or [`AMOUNT_MAX`] for no cap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NewTransfer {
    pub id: TransferId,
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    pub amount: Amount,
    pub pending_id: TransferId,
    pub timeout: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: TransferFlags,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    /// 0, unless `imported`: then the transfer's timestamp in the system it is migrated from.
    pub timestamp: Timestamp,
}

/// A transfer as stored: the submitted fields with those inherited from a pending transfer
/// filled in, and the timestamp the leader assigned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfer {
    pub id: TransferId,
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    pub amount: Amount,
    pub pending_id: TransferId,
    pub timeout: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: TransferFlags,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub timestamp: Timestamp,
}

impl Transfer {
    /// When a pending transfer with a timeout expires, in nanoseconds; `None` if it never does.
    pub fn expires_at(&self) -> Option<Timestamp> {
        if self.flags.contains(TransferFlags::PENDING) && self.timeout > 0 {
            Some(Timestamp(
                self.timestamp.0 + u64::from(self.timeout) * NANOS_PER_SECOND,
            ))
        } else {
            None
        }
    }
}

pub const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// The largest amount: as a post's amount it means "the pending transfer's full amount", as a
/// balancing transfer's amount "no cap".
pub const AMOUNT_MAX: Amount = Amount::MAX;

/// An amount or a balance: 128 bits, so that no realistic ledger's sums can overflow (a
/// balance of `u64::MAX` is 18 quintillion of the smallest unit; a sum of many such is not).
pub type Amount = u128;

/// What became of a pending transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PendingStatus {
    Pending,
    Posted,
    Voided,
    Expired,
}

impl PendingStatus {
    pub fn name(self) -> &'static str {
        match self {
            PendingStatus::Pending => "pending",
            PendingStatus::Posted => "posted",
            PendingStatus::Voided => "voided",
            PendingStatus::Expired => "expired",
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            PendingStatus::Pending => 1,
            PendingStatus::Posted => 2,
            PendingStatus::Voided => 3,
            PendingStatus::Expired => 4,
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => PendingStatus::Pending,
            2 => PendingStatus::Posted,
            3 => PendingStatus::Voided,
            4 => PendingStatus::Expired,
            _ => return None,
        })
    }
}
