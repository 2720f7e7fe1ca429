//! The ledger's data model as the API shows it: ids, flags, accounts and transfers, mirrored
//! from the server's `bulwark-ledger` (this crate stands alone and imports nothing of it).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::wire::dec;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(#[serde(with = "dec")] pub u128);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_newtype!(
    /// An account's id: 1 to 2^128 − 2 (a ULID or UUID as its 128-bit integer serves).
    AccountId
);
id_newtype!(
    /// A transfer's id: 1 to 2^128 − 2. The id is what makes a retry safe: the ledger applies an
    /// id once and answers `exists` to every later event with the same id and fields.
    TransferId
);

/// A ledger timestamp: nanoseconds since the Unix epoch, unique across accounts and transfers,
/// increasing in commit order. The cursors of history, queries and the feed are timestamps.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(#[serde(with = "dec")] pub u64);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

macro_rules! flags_newtype {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $flag:ident = $bit:expr => $text:expr,)* }) => {
        $(#[$doc])*
        ///
        /// Sent and answered as a list of names. A name this version does not know (from a
        /// newer server) is dropped when an answer is read.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name(u16);

        impl $name {
            $($(#[$fdoc])* pub const $flag: $name = $name($bit);)*
            const NAMES: &'static [(&'static str, u16)] = &[$(($text, $bit)),*];

            /// No flag.
            pub const fn empty() -> $name {
                $name(0)
            }
            /// Whether every flag of `other` is set (and `other` is not empty).
            pub const fn contains(self, other: $name) -> bool {
                self.0 & other.0 == other.0 && other.0 != 0
            }
            /// The names of the flags set, in the API's order.
            pub fn names(self) -> Vec<&'static str> {
                Self::NAMES.iter().filter(|(_, b)| self.0 & b != 0).map(|(n, _)| *n).collect()
            }
            /// The flag of this name, if this version knows it.
            pub fn from_name(name: &str) -> Option<$name> {
                Self::NAMES.iter().find(|(n, _)| *n == name).map(|(_, b)| $name(*b))
            }
        }

        impl std::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, rhs: $name) -> $name {
                $name(self.0 | rhs.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.names())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let names = Vec::<String>::deserialize(d)?;
                let bits = names.iter().filter_map(|n| Self::from_name(n)).fold(0, |a, f| a | f.0);
                Ok($name(bits))
            }
        }
    };
}

flags_newtype!(
    /// An account's flags.
    AccountFlags {
        /// The event and the next succeed or fail together (a chain).
        LINKED = 1 => "linked",
        /// `debits_pending + debits_posted` may never exceed `credits_posted`.
        DEBITS_MUST_NOT_EXCEED_CREDITS = 2 => "debits_must_not_exceed_credits",
        /// The mirror rule.
        CREDITS_MUST_NOT_EXCEED_DEBITS = 4 => "credits_must_not_exceed_debits",
        /// The account keeps its balances after every change (`/balances`).
        HISTORY = 8 => "history",
        /// No transfer may touch the account.
        CLOSED = 16 => "closed",
        /// Migrated from another system with its own `timestamp`.
        IMPORTED = 32 => "imported",
    }
);

flags_newtype!(
    /// A transfer's flags.
    TransferFlags {
        /// Chains with the next event.
        LINKED = 1 => "linked",
        /// Reserves the amount until posted, voided or expired.
        PENDING = 2 => "pending",
        /// Posts the pending transfer `pending_id`.
        POST_PENDING_TRANSFER = 4 => "post_pending_transfer",
        /// Releases the pending transfer `pending_id`.
        VOID_PENDING_TRANSFER = 8 => "void_pending_transfer",
        /// Moves at most what the debit account can give.
        BALANCING_DEBIT = 16 => "balancing_debit",
        /// Moves at most what the credit account can take.
        BALANCING_CREDIT = 32 => "balancing_credit",
        /// (Pending only) closes the debit account.
        CLOSING_DEBIT = 64 => "closing_debit",
        /// (Pending only) closes the credit account.
        CLOSING_CREDIT = 128 => "closing_credit",
        /// Migrated from another system with its own `timestamp`.
        IMPORTED = 256 => "imported",
    }
);

/// An account to create: balances and timestamp are the ledger's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NewAccount {
    pub id: AccountId,
    /// Not 0.
    pub ledger: u32,
    /// Not 0.
    pub code: u16,
    pub flags: AccountFlags,
    #[serde(with = "dec")]
    pub user_data_128: u128,
    #[serde(with = "dec")]
    pub user_data_64: u64,
    pub user_data_32: u32,
    /// 0, unless `imported`.
    pub timestamp: Timestamp,
}

impl NewAccount {
    /// An account with no flags and no user data.
    pub fn new(id: AccountId, ledger: u32, code: u16) -> NewAccount {
        NewAccount {
            id,
            ledger,
            code,
            ..NewAccount::default()
        }
    }
}

/// A transfer to create.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NewTransfer {
    pub id: TransferId,
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    /// Required (0 is a valid amount), except on a post (`None`: the full pending amount) and
    /// a void. On a balancing transfer it is the most to move (0: no cap).
    #[serde(with = "opt_amount", skip_serializing_if = "Option::is_none")]
    pub amount: Option<u128>,
    pub pending_id: TransferId,
    /// Seconds before a pending transfer expires (0: never).
    pub timeout: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: TransferFlags,
    #[serde(with = "dec")]
    pub user_data_128: u128,
    #[serde(with = "dec")]
    pub user_data_64: u64,
    pub user_data_32: u32,
    /// 0, unless `imported`.
    pub timestamp: Timestamp,
}

mod opt_amount {
    pub fn serialize<S: serde::Serializer>(v: &Option<u128>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }
}

impl NewTransfer {
    /// A single-phase transfer of `amount` from `debit` to `credit`.
    pub fn new(
        id: TransferId,
        debit: AccountId,
        credit: AccountId,
        amount: u128,
        ledger: u32,
        code: u16,
    ) -> NewTransfer {
        NewTransfer {
            id,
            debit_account_id: debit,
            credit_account_id: credit,
            amount: Some(amount),
            ledger,
            code,
            ..NewTransfer::default()
        }
    }
}

/// Four balances of an account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balances {
    #[serde(with = "dec")]
    pub debits_pending: u128,
    #[serde(with = "dec")]
    pub debits_posted: u128,
    #[serde(with = "dec")]
    pub credits_pending: u128,
    #[serde(with = "dec")]
    pub credits_posted: u128,
}

/// An account as the ledger holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub ledger: u32,
    pub code: u16,
    pub flags: AccountFlags,
    #[serde(with = "dec")]
    pub user_data_128: u128,
    #[serde(with = "dec")]
    pub user_data_64: u64,
    pub user_data_32: u32,
    #[serde(flatten)]
    pub balances: Balances,
    pub timestamp: Timestamp,
}

/// Where a pending transfer stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingStatus {
    Pending,
    Posted,
    Voided,
    Expired,
    /// A status this version does not know (from a newer server).
    Other(String),
}

impl<'de> Deserialize<'de> for PendingStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match String::deserialize(d)?.as_str() {
            "pending" => PendingStatus::Pending,
            "posted" => PendingStatus::Posted,
            "voided" => PendingStatus::Voided,
            "expired" => PendingStatus::Expired,
            other => PendingStatus::Other(other.to_string()),
        })
    }
}

/// A transfer as the ledger holds it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Transfer {
    pub id: TransferId,
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    /// What it moved (a balancing transfer's actual amount).
    #[serde(with = "dec")]
    pub amount: u128,
    pub pending_id: TransferId,
    pub timeout: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: TransferFlags,
    #[serde(with = "dec")]
    pub user_data_128: u128,
    #[serde(with = "dec")]
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub timestamp: Timestamp,
    /// For a transfer created `pending`, where it stands (`GET /v1/transfers/{id}` only).
    #[serde(default)]
    pub pending_status: Option<PendingStatus>,
    /// In an account's history, for an account with `history`: its balances right after.
    #[serde(default)]
    pub balances: Option<Balances>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_send_wide_integers_as_strings_and_answers_read_them() {
        let mut t = NewTransfer::new(
            TransferId(u128::MAX - 1),
            AccountId(1),
            AccountId(2),
            5,
            1,
            1,
        );
        t.flags = TransferFlags::PENDING | TransferFlags::LINKED;
        let json = serde_json::to_value(t).unwrap();
        assert_eq!(json["id"], "340282366920938463463374607431768211454");
        assert_eq!(json["amount"], "5");
        assert_eq!(json["flags"], serde_json::json!(["linked", "pending"]));
        let post = NewTransfer { amount: None, ..t };
        assert!(serde_json::to_value(post).unwrap().get("amount").is_none());
        let a: Account = serde_json::from_str(
            r#"{"id":"7","ledger":1,"code":2,"flags":["history","from_the_future"],
                "user_data_128":"0","user_data_64":"0","user_data_32":0,"debits_pending":"0",
                "debits_posted":"5","credits_pending":"0","credits_posted":"0","timestamp":"9",
                "a_new_field":1}"#,
        )
        .unwrap();
        assert_eq!(a.id, AccountId(7));
        assert_eq!(a.flags, AccountFlags::HISTORY);
        assert_eq!(a.balances.debits_posted, 5);
    }
}
