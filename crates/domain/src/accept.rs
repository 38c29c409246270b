//! The accept decision: what becomes of each request of a batch, decided in
//! arrival order against the locked state of its customer.
//!
//! The store reads the state (customer rows locked, the top-ups that already
//! hold a request's keys, the rolling 24 h use), [`plan_accepts`] decides, and
//! the store writes the verdicts. Both engines decide the same way because
//! they run this one function.
//!
//! A request may carry two idempotency keys:
//! - the **reference key** (`ref_key`): the customer's reference under the
//!   `unique` [`ReferencePolicy`], unique per customer forever;
//! - the **idempotency key** (`idem_key`): an `Idempotency-Key` header.
//!
//! The idempotency key is looked up first, then the reference key. A request
//! whose key is already held answers with that top-up ([`Verdict::Existing`]),
//! except that on the compatibility routes a reference whose top-up ended
//! FAILED may start anew ([`AcceptRequest::restart_failed`]): the new top-up
//! takes the key over ([`Verdict::New::replaces`]).

use crate::money::Money;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// How a customer's references are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReferencePolicy {
    /// `(customer, reference)` is unique forever: a repeat replays.
    #[default]
    Unique,
    /// References are free text that may repeat (the old system's meaning):
    /// every request is a new top-up unless it carries an `Idempotency-Key`.
    Free,
}

impl ReferencePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ReferencePolicy::Unique => "unique",
            ReferencePolicy::Free => "free",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "unique" => Some(ReferencePolicy::Unique),
            "free" => Some(ReferencePolicy::Free),
            _ => None,
        }
    }
}

impl TryFrom<String> for ReferencePolicy {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        ReferencePolicy::parse(&text).ok_or_else(|| format!("unknown reference policy {text:?}"))
    }
}

/// One request, as the decision sees it (priced and validated before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptRequest {
    pub customer_id: String,
    pub ref_key: Option<String>,
    pub idem_key: Option<String>,
    /// What the hold takes from the balance (account currency).
    pub held: Money,
    /// Face value in MXN, counted against the daily limit.
    pub face_value: Money,
    /// A FAILED top-up holding `ref_key` may be started anew (compatibility routes).
    pub restart_failed: bool,
}

/// A customer's locked state at the start of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub balance: Money,
    pub credit_limit: Money,
    pub active: bool,
    /// Rolling 24 h limit of face value (MXN).
    pub daily_limit: Option<Money>,
    /// Face value of the customer's top-ups of the last 24 h that did not fail.
    pub used_24h: Money,
}

/// A stored top-up that holds one of the batch's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prior {
    pub customer_id: String,
    pub ref_key: Option<String>,
    pub idem_key: Option<String>,
    /// It ended FAILED (its reference may be reused where allowed).
    pub failed: bool,
}

/// Why a request is refused; nothing is written for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Refusal {
    UnknownCustomer,
    Inactive,
    InsufficientFunds {
        balance: Money,
        credit_limit: Money,
        required: Money,
    },
    DailyLimit {
        limit: Money,
        used: Money,
        requested: Money,
    },
}

/// What becomes of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A new top-up: its hold leaves the balance at `balance_after`. When
    /// `replaces` names a prior (a FAILED top-up), the new one takes over its
    /// reference key.
    New {
        balance_after: Money,
        replaces: Option<usize>,
    },
    /// The key is held by this prior top-up: answer with it.
    Existing(usize),
    /// The same key as an earlier request of this batch: answer with its top-up.
    SameAs(usize),
    Refused(Refusal),
}

/// Where each customer's account ends after the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountAfter {
    pub balance: Money,
    /// Holds taken in this batch (the row's version moves by this much).
    pub holds: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One per request, in the order given.
    pub verdicts: Vec<Verdict>,
    /// Customers with at least one hold.
    pub accounts: BTreeMap<String, AccountAfter>,
}

/// The keys seen so far: the priors' and this batch's (request index).
struct Keys {
    prior_idem: HashMap<(String, String), usize>,
    prior_ref: HashMap<(String, String), usize>,
    planned_idem: HashMap<(String, String), usize>,
    planned_ref: HashMap<(String, String), usize>,
}

/// What the keys of a request say before any money is looked at.
enum KeyMatch {
    /// Answered already (an existing top-up or an earlier request).
    Answered(Verdict),
    /// A new top-up, which takes over the reference key of this FAILED prior, if any.
    Fresh(Option<usize>),
}

impl Keys {
    fn new(priors: &[Prior]) -> Self {
        let index = |pick: fn(&Prior) -> Option<&String>| {
            priors
                .iter()
                .enumerate()
                .filter_map(|(i, p)| pick(p).map(|k| ((p.customer_id.clone(), k.clone()), i)))
                .collect()
        };
        Keys {
            prior_idem: index(|p| p.idem_key.as_ref()),
            prior_ref: index(|p| p.ref_key.as_ref()),
            planned_idem: HashMap::new(),
            planned_ref: HashMap::new(),
        }
    }

    /// The idempotency key first, then the reference key.
    fn check(&self, req: &AcceptRequest, priors: &[Prior]) -> KeyMatch {
        let pair = |k: &String| (req.customer_id.clone(), k.clone());
        if let Some(key) = req.idem_key.as_ref().map(pair) {
            if let Some(&j) = self.planned_idem.get(&key) {
                return KeyMatch::Answered(Verdict::SameAs(j));
            }
            if let Some(&p) = self.prior_idem.get(&key) {
                return KeyMatch::Answered(Verdict::Existing(p));
            }
        }
        if let Some(key) = req.ref_key.as_ref().map(pair) {
            if let Some(&j) = self.planned_ref.get(&key) {
                return KeyMatch::Answered(Verdict::SameAs(j));
            }
            if let Some(&p) = self.prior_ref.get(&key) {
                if priors[p].failed && req.restart_failed {
                    return KeyMatch::Fresh(Some(p));
                }
                return KeyMatch::Answered(Verdict::Existing(p));
            }
        }
        KeyMatch::Fresh(None)
    }

    fn plan(&mut self, req: &AcceptRequest, i: usize) {
        if let Some(k) = &req.idem_key {
            self.planned_idem.insert((req.customer_id.clone(), k.clone()), i);
        }
        if let Some(k) = &req.ref_key {
            self.planned_ref.insert((req.customer_id.clone(), k.clone()), i);
        }
    }
}

/// Why `acc` cannot take `req` now, if it cannot.
fn refusal(acc: &Account, req: &AcceptRequest) -> Option<Refusal> {
    if !acc.active {
        return Some(Refusal::Inactive);
    }
    if acc.balance.0 - req.held.0 < -acc.credit_limit.0 {
        return Some(Refusal::InsufficientFunds {
            balance: acc.balance,
            credit_limit: acc.credit_limit,
            required: req.held,
        });
    }
    acc.daily_limit
        .filter(|limit| acc.used_24h.0 + req.face_value.0 > limit.0)
        .map(|limit| Refusal::DailyLimit {
            limit,
            used: acc.used_24h,
            requested: req.face_value,
        })
}

/// Decides a batch in arrival order: each request sees what the requests
/// before it left (balance, daily use, keys).
pub fn plan_accepts(requests: &[AcceptRequest], accounts: &HashMap<String, Account>, priors: &[Prior]) -> Plan {
    let mut keys = Keys::new(priors);
    let mut state: HashMap<&str, (Account, i64)> = HashMap::new();
    let mut verdicts = Vec::with_capacity(requests.len());
    for (i, req) in requests.iter().enumerate() {
        let replaces = match keys.check(req, priors) {
            KeyMatch::Answered(v) => {
                verdicts.push(v);
                continue;
            }
            KeyMatch::Fresh(replaces) => replaces,
        };
        let Some(account) = accounts.get(&req.customer_id) else {
            verdicts.push(Verdict::Refused(Refusal::UnknownCustomer));
            continue;
        };
        let (acc, holds) = state
            .entry(req.customer_id.as_str())
            .or_insert_with(|| (account.clone(), 0));
        if let Some(r) = refusal(acc, req) {
            verdicts.push(Verdict::Refused(r));
            continue;
        }
        acc.balance = Money(acc.balance.0 - req.held.0);
        acc.used_24h = Money(acc.used_24h.0 + req.face_value.0);
        *holds += 1;
        keys.plan(req, i);
        verdicts.push(Verdict::New {
            balance_after: acc.balance,
            replaces,
        });
    }
    let accounts = state
        .into_iter()
        .filter(|(_, (_, holds))| *holds > 0)
        .map(|(id, (acc, holds))| {
            let after = AccountAfter {
                balance: acc.balance,
                holds,
            };
            (id.to_string(), after)
        })
        .collect();
    Plan { verdicts, accounts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(customer: &str, reference: Option<&str>, held: i64) -> AcceptRequest {
        AcceptRequest {
            customer_id: customer.into(),
            ref_key: reference.map(str::to_string),
            idem_key: None,
            held: Money(held),
            face_value: Money(held),
            restart_failed: false,
        }
    }

    fn account(balance: i64) -> Account {
        Account {
            balance: Money(balance),
            credit_limit: Money::ZERO,
            active: true,
            daily_limit: None,
            used_24h: Money::ZERO,
        }
    }

    #[test]
    fn decides_in_arrival_order() {
        let accounts = HashMap::from([("C".to_string(), account(1000))]);
        let plan = plan_accepts(
            &[
                req("C", Some("a"), 600),
                req("C", Some("b"), 600),
                req("C", Some("c"), 400),
            ],
            &accounts,
            &[],
        );
        assert_eq!(
            plan.verdicts[0],
            Verdict::New {
                balance_after: Money(400),
                replaces: None
            }
        );
        assert!(matches!(
            plan.verdicts[1],
            Verdict::Refused(Refusal::InsufficientFunds { .. })
        ));
        assert_eq!(
            plan.verdicts[2],
            Verdict::New {
                balance_after: Money(0),
                replaces: None
            }
        );
        assert_eq!(
            plan.accounts["C"],
            AccountAfter {
                balance: Money(0),
                holds: 2
            }
        );
    }

    #[test]
    fn keys_replay_and_failed_references_restart_only_when_allowed() {
        let accounts = HashMap::from([("C".to_string(), account(1000))]);
        let priors = [
            Prior {
                customer_id: "C".into(),
                ref_key: Some("done".into()),
                idem_key: None,
                failed: false,
            },
            Prior {
                customer_id: "C".into(),
                ref_key: Some("failed".into()),
                idem_key: Some("k1".into()),
                failed: true,
            },
        ];
        let mut restart = req("C", Some("failed"), 100);
        restart.restart_failed = true;
        let mut by_key = req("C", None, 100);
        by_key.idem_key = Some("k1".into());
        let plan = plan_accepts(
            &[
                req("C", Some("done"), 100),
                req("C", Some("failed"), 100),
                restart.clone(),
                restart,
                by_key,
            ],
            &accounts,
            &priors,
        );
        assert_eq!(plan.verdicts[0], Verdict::Existing(0));
        assert_eq!(
            plan.verdicts[1],
            Verdict::Existing(1),
            "a FAILED reference replays on /v1"
        );
        assert_eq!(
            plan.verdicts[2],
            Verdict::New {
                balance_after: Money(900),
                replaces: Some(1)
            }
        );
        assert_eq!(plan.verdicts[3], Verdict::SameAs(2));
        assert_eq!(
            plan.verdicts[4],
            Verdict::Existing(1),
            "the idempotency key comes first"
        );
    }

    #[test]
    fn refusals_name_their_figures() {
        let mut limited = account(10_000);
        limited.daily_limit = Some(Money(5000));
        limited.used_24h = Money(4500);
        let mut inactive = account(10_000);
        inactive.active = false;
        let accounts = HashMap::from([("L".to_string(), limited), ("I".to_string(), inactive)]);
        let plan = plan_accepts(
            &[
                req("L", None, 600),
                req("I", None, 1),
                req("X", None, 1),
                req("L", None, 500),
            ],
            &accounts,
            &[],
        );
        assert_eq!(
            plan.verdicts[0],
            Verdict::Refused(Refusal::DailyLimit {
                limit: Money(5000),
                used: Money(4500),
                requested: Money(600)
            })
        );
        assert_eq!(plan.verdicts[1], Verdict::Refused(Refusal::Inactive));
        assert_eq!(plan.verdicts[2], Verdict::Refused(Refusal::UnknownCustomer));
        assert!(
            matches!(plan.verdicts[3], Verdict::New { .. }),
            "reaching the limit exactly is allowed"
        );
    }

    fn arb_batch() -> impl Strategy<Value = (Vec<AcceptRequest>, HashMap<String, Account>)> {
        let request = (0usize..3, proptest::option::of(0u8..6), 1i64..500, any::<bool>());
        let acc = (0i64..2000, 0i64..300, any::<bool>());
        (
            proptest::collection::vec(request, 0..40),
            proptest::collection::vec(acc, 3),
        )
            .prop_map(|(reqs, accs)| {
                let requests = reqs
                    .into_iter()
                    .map(|(c, r, held, restart)| AcceptRequest {
                        customer_id: format!("C{c}"),
                        ref_key: r.map(|r| format!("r{r}")),
                        idem_key: None,
                        held: Money(held),
                        face_value: Money(held),
                        restart_failed: restart,
                    })
                    .collect();
                let accounts = accs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (balance, credit, active))| {
                        (
                            format!("C{i}"),
                            Account {
                                balance: Money(balance),
                                credit_limit: Money(credit),
                                active: active || i == 0,
                                daily_limit: None,
                                used_24h: Money::ZERO,
                            },
                        )
                    })
                    .collect();
                (requests, accounts)
            })
    }

    proptest! {
        /// No customer is ever taken below its credit limit; each new top-up's
        /// balance is the previous one less its hold, in arrival order; a key
        /// makes at most one new top-up; a refusal for funds means the
        /// balance left at that point could not cover it.
        #[test]
        fn never_overdraws_and_decides_in_order((requests, accounts) in arb_batch()) {
            let plan = plan_accepts(&requests, &accounts, &[]);
            prop_assert_eq!(plan.verdicts.len(), requests.len());
            let mut running: HashMap<String, i64> =
                accounts.iter().map(|(k, a)| (k.clone(), a.balance.0)).collect();
            let mut keys = std::collections::HashSet::new();
            for (req, verdict) in requests.iter().zip(&plan.verdicts) {
                let limit = accounts.get(&req.customer_id).map(|a| a.credit_limit.0);
                match verdict {
                    Verdict::New { balance_after, .. } => {
                        let bal = running.get_mut(&req.customer_id).expect("known customer");
                        *bal -= req.held.0;
                        prop_assert_eq!(*bal, balance_after.0);
                        prop_assert!(balance_after.0 >= -limit.unwrap_or(0));
                        if let Some(k) = &req.ref_key {
                            prop_assert!(keys.insert((req.customer_id.clone(), k.clone())));
                        }
                    }
                    Verdict::Refused(Refusal::InsufficientFunds { balance, .. }) => {
                        prop_assert_eq!(balance.0, running[&req.customer_id]);
                        prop_assert!(balance.0 - req.held.0 < -limit.unwrap_or(0));
                    }
                    Verdict::SameAs(j) => {
                        let earlier_is_new = matches!(plan.verdicts[*j], Verdict::New { .. });
                        prop_assert!(earlier_is_new);
                        prop_assert_eq!(&requests[*j].ref_key, &req.ref_key);
                    }
                    _ => {}
                }
            }
            for (id, after) in &plan.accounts {
                prop_assert_eq!(after.balance.0, running[id]);
            }
        }
    }
}
