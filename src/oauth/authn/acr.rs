//! Authentication context classes (OpenID Connect Core §2 `acr`): how strongly the user
//! proved who they are, as a level computed from the methods used (`amr`, RFC 8176), and what
//! a request needs (`acr_values`, a client's `default_acr_values`, a resource's or the
//! server's multi-factor policy). Pure: the sign-in and authorization steps call in here.

use serde::{Deserialize, Serialize};

pub use crate::config::MfaPolicy;

/// One factor: a password, or an upstream identity provider's word.
pub const ACR_ONE_FACTOR: &str = "urn:concierge:acr:1fa";
/// Two factors: a password and an authenticator or recovery code.
pub const ACR_MULTI_FACTOR: &str = "urn:concierge:acr:mfa";
/// Phishing-resistant (OpenID EAP ACR Values 1.0 §2): a passkey with user verification.
pub const ACR_PHISHING_RESISTANT: &str = "phr";

/// The `acr` values this server issues and honours, weakest first (metadata's
/// `acr_values_supported`).
pub const SUPPORTED: [&str; 3] = [ACR_ONE_FACTOR, ACR_MULTI_FACTOR, ACR_PHISHING_RESISTANT];

/// How strongly a user authenticated, ordered: a higher level satisfies a lower one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    OneFactor,
    MultiFactor,
    PhishingResistant,
}

impl Level {
    /// The `acr` value of this level.
    pub fn acr(self) -> &'static str {
        match self {
            Self::OneFactor => ACR_ONE_FACTOR,
            Self::MultiFactor => ACR_MULTI_FACTOR,
            Self::PhishingResistant => ACR_PHISHING_RESISTANT,
        }
    }

    /// The level an `acr` value names; None for a value this server does not issue.
    pub fn from_acr(acr: &str) -> Option<Self> {
        match acr {
            ACR_ONE_FACTOR => Some(Self::OneFactor),
            ACR_MULTI_FACTOR => Some(Self::MultiFactor),
            ACR_PHISHING_RESISTANT => Some(Self::PhishingResistant),
            _ => None,
        }
    }

    /// The level the methods of a sign-in reach (RFC 8176 values): a passkey (`hwk` with
    /// user verification, `user`, or after a password) is phishing-resistant; a password
    /// with an authenticator code (`otp`) or a recovery code (`mfa`) is two factors;
    /// anything else is one.
    pub fn of_amr(amr: &[String]) -> Self {
        let has = |m: &str| amr.iter().any(|a| a == m);
        // A passkey with user verification, or after another first factor (a password,
        // another provider's sign-in).
        if has("hwk") && (has("user") || has("pwd") || has("pin") || has("fed")) {
            Self::PhishingResistant
        } else if has("otp") || has("mfa") || has("hwk") {
            Self::MultiFactor
        } else {
            Self::OneFactor
        }
    }

    /// The level of a stored session or grant: its `acr` when it names one of ours, else
    /// computed from its `amr` (sessions made before `acr` was recorded).
    pub fn of_session(acr: Option<&str>, amr: &[String]) -> Self {
        acr.and_then(Self::from_acr)
            .unwrap_or_else(|| Self::of_amr(amr))
    }

    /// Short words for pages and logs.
    pub fn words(self) -> &'static str {
        match self {
            Self::OneFactor => "a password",
            Self::MultiFactor => "a second factor",
            Self::PhishingResistant => "a passkey",
        }
    }
}

/// What `acr_values` asks for (OpenID Connect Core §3.1.2.1: space-separated, in order of
/// preference): the weakest of the values this server knows, since any of them satisfies
/// the client. None when none is known (unknown values are ignored, as the request is
/// voluntary: the `acr` the token carries tells the client what it got).
pub fn requested(acr_values: &str) -> Option<Level> {
    acr_values
        .split_ascii_whitespace()
        .filter_map(Level::from_acr)
        .min()
}

/// The level every sign-in must reach under the server-wide policy.
pub fn policy_floor(policy: MfaPolicy) -> Level {
    match policy {
        MfaPolicy::Required => Level::MultiFactor,
        MfaPolicy::Off | MfaPolicy::Offered => Level::OneFactor,
    }
}

/// The level a request must reach: the server's `policy`, the client's `default_acr_values`
/// (the weakest listed satisfies it) and each resource's requirement, whichever is highest;
/// None when a password is enough.
pub fn required(
    policy: MfaPolicy,
    client_defaults: &[String],
    resources: impl IntoIterator<Item = Option<Level>>,
) -> Option<Level> {
    let client = client_defaults
        .iter()
        .filter_map(|a| Level::from_acr(a))
        .min();
    let resources = resources.into_iter().flatten().max();
    [client, resources, Some(policy_floor(policy))]
        .into_iter()
        .flatten()
        .max()
        .filter(|l| *l > Level::OneFactor)
}

/// What a request needs of the user's authentication.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Needed {
    /// Must be reached: the policy's floor, a client's or resource's requirement. A user
    /// who has no factor strong enough enrols one.
    pub required: Option<Level>,
    /// Asked by the client (`acr_values`, or its `default_acr_values`): reached when the user
    /// can (has such a factor, or may enrol an authenticator), else the token says what was
    /// reached instead.
    pub requested: Option<Level>,
}

impl Needed {
    /// The level to ask of a user who can reach `reachable` at most (their factors, or an
    /// authenticator they may enrol): the requirement always, the request when reachable.
    pub fn target(&self, reachable: Level) -> Level {
        let requested = self.requested.filter(|l| *l <= reachable);
        self.required.max(requested).unwrap_or(Level::OneFactor)
    }

    /// Is a session at `have` enough, for a user who can reach `reachable`?
    pub fn met_by(&self, have: Level, reachable: Level) -> bool {
        have >= self.target(reachable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amr(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn levels_follow_the_methods() {
        assert_eq!(Level::of_amr(&amr(&["pwd"])), Level::OneFactor);
        assert_eq!(Level::of_amr(&amr(&[])), Level::OneFactor);
        assert_eq!(Level::of_amr(&amr(&["pwd", "otp"])), Level::MultiFactor);
        assert_eq!(Level::of_amr(&amr(&["pwd", "mfa"])), Level::MultiFactor);
        assert_eq!(
            Level::of_amr(&amr(&["hwk", "user"])),
            Level::PhishingResistant
        );
        assert_eq!(
            Level::of_amr(&amr(&["pwd", "hwk"])),
            Level::PhishingResistant
        );
        // A key without user verification is something the user has: one more factor only.
        assert_eq!(Level::of_amr(&amr(&["hwk"])), Level::MultiFactor);
        assert_eq!(Level::of_amr(&amr(&["fed"])), Level::OneFactor);
        assert_eq!(Level::of_amr(&amr(&["fed", "otp"])), Level::MultiFactor);
        assert_eq!(
            Level::of_amr(&amr(&["fed", "hwk"])),
            Level::PhishingResistant
        );
    }

    #[test]
    fn acr_values_round_trip_and_order() {
        for acr in SUPPORTED {
            assert_eq!(Level::from_acr(acr).map(Level::acr), Some(acr));
        }
        assert!(Level::OneFactor < Level::MultiFactor);
        assert!(Level::MultiFactor < Level::PhishingResistant);
        assert_eq!(Level::from_acr("urn:mace:incommon:iap:silver"), None);
        assert_eq!(
            Level::of_session(Some(ACR_MULTI_FACTOR), &amr(&["pwd"])),
            Level::MultiFactor
        );
        assert_eq!(
            Level::of_session(None, &amr(&["pwd", "otp"])),
            Level::MultiFactor
        );
    }

    #[test]
    fn requested_takes_the_weakest_known_value() {
        assert_eq!(requested(""), None);
        assert_eq!(requested("urn:other:gold"), None);
        assert_eq!(
            requested("phr urn:concierge:acr:mfa urn:other:gold"),
            Some(Level::MultiFactor)
        );
        assert_eq!(requested("  phr  "), Some(Level::PhishingResistant));
    }

    #[test]
    fn requirements_bind_and_requests_bend() {
        let required = Needed {
            required: Some(Level::MultiFactor),
            requested: None,
        };
        assert!(!required.met_by(Level::OneFactor, Level::OneFactor));
        assert!(required.met_by(Level::MultiFactor, Level::MultiFactor));
        assert!(required.met_by(Level::PhishingResistant, Level::MultiFactor));
        let requested = Needed {
            required: None,
            requested: Some(Level::PhishingResistant),
        };
        // A user without a passkey gets what they can reach; one with a passkey is asked.
        assert!(requested.met_by(Level::MultiFactor, Level::MultiFactor));
        assert!(!requested.met_by(Level::MultiFactor, Level::PhishingResistant));
        assert_eq!(
            Needed::default().target(Level::PhishingResistant),
            Level::OneFactor
        );
        assert_eq!(policy_floor(MfaPolicy::Required), Level::MultiFactor);
        assert_eq!(policy_floor(MfaPolicy::Off), Level::OneFactor);
    }
}
