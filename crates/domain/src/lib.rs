//! Pure types and rules of Recarga: no I/O, no async, no database.
//!
//! Everything that decides *what* happens to money lives here so it can be
//! tested exhaustively: [`Money`] (integer centavos, never floats), [`Msisdn`]
//! (a normalised Mexican mobile number), [`TopupStatus`] and its allowed
//! transitions, the product [`catalogue`] and the [`pricing`] that turns a face
//! value into what we send upstream and what we hold from the customer, and
//! the pure decisions of the money path: [`plan_accepts`] (a batch of
//! requests against their customers' locked state) and [`classify_attempt`]
//! / [`classify_check`] (what an upstream answer writes).
//! [`spreadsheet`] keeps the free-text cells of our CSV files from running as
//! spreadsheet formulas, and undoes that exactly for importers.

pub mod accept;
pub mod attempt;
pub mod catalogue;
pub mod failpoint;
pub mod ids;
pub mod ledger;
pub mod legacy;
pub mod money;
pub mod msisdn;
pub mod netlist;
pub mod pricing;
pub mod reconcile;
pub mod spreadsheet;
pub mod status;

pub use accept::{AcceptRequest, Account, Plan, Prior, ReferencePolicy, Refusal, Verdict, plan_accepts};
pub use attempt::{
    AttemptOutcome, AttemptPolicy, CheckDecision, ExchangeKind, ExchangeOutcome, FinalOutcome, Outcome, StatusAnswer,
    classify_attempt, classify_check,
};
pub use catalogue::{CatalogueRule, Product, ProductQuote};
pub use ids::{attempt_id, is_legacy_id, is_own_id, new_topup_id, topup_of_attempt, valid_topup_id};
pub use ledger::LedgerKind;
pub use money::{Currency, Money, MoneyError};
pub use msisdn::{Msisdn, MsisdnError};
pub use netlist::{IpList, client_ip};
pub use pricing::{Price, PricingError, price_topup};
pub use status::TopupStatus;
