//! Reaching the issuers: discovery or a configured JWKS, the keys, the clock
//! check and the start-up probes — at once ([`GuardBuilder::build`]) or in
//! the background ([`GuardBuilder::build_in_background`]).
//!
//! [`GuardBuilder::build`]: crate::GuardBuilder::build
//! [`GuardBuilder::build_in_background`]: crate::GuardBuilder::build_in_background

use std::sync::{Arc, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use url::Url;

use crate::config::check_secure;
use crate::error::BuildError;
use crate::guard::{Connected, Guard, Inner};
use crate::jwks::{ClockReading, KeyStore, discover};
use crate::validate::ClaimRules;

impl Guard {
    /// Connects issuer `index`: its metadata (unless skipped), its keys, the
    /// clock. A skewed clock fails when `strict`, else it is only reported.
    pub(crate) async fn connect(&self, index: usize, strict: bool) -> Result<(), BuildError> {
        let inner = &self.inner;
        let Some(slot) = inner.issuers.get(index) else {
            return Ok(());
        };
        let config = &slot.config;
        let settings = &inner.startup;
        let parse =
            |what: &'static str, value: &Option<String>| -> Result<Option<Url>, BuildError> {
                value
                    .as_deref()
                    .map(|v| {
                        Url::parse(v).map_err(|e| BuildError::InvalidUrl {
                            what,
                            value: v.to_owned(),
                            reason: e.to_string(),
                        })
                    })
                    .transpose()
            };
        let mut token_endpoint = parse("token_endpoint", &config.token_endpoint)?;
        let mut introspection_endpoint =
            parse("introspection_endpoint", &config.introspection_endpoint)?;
        let mut backchannel_endpoint = None;
        let (issuer, keys, mut clock) = if let Some(jwks) = &config.jwks {
            let keys = KeyStore::fixed(inner.http.clone(), jwks)?;
            (config.url.clone(), keys, None)
        } else if let Some(jwks_uri) = parse("jwks_uri", &config.jwks_uri)? {
            let keys = KeyStore::new(
                inner.http.clone(),
                jwks_uri,
                settings.jwks_ttl,
                settings.refetch_interval,
            );
            (config.url.clone(), keys, None)
        } else {
            let issuer_url = Url::parse(&config.url).map_err(|e| BuildError::InvalidUrl {
                what: "issuer URL",
                value: config.url.clone(),
                reason: e.to_string(),
            })?;
            let found = discover(&inner.http, &issuer_url, &config.url).await?;
            check_secure(settings.allow_insecure_http, "jwks_uri", &found.jwks_uri)?;
            token_endpoint = token_endpoint.or(found.token_endpoint);
            introspection_endpoint = introspection_endpoint.or(found.introspection_endpoint);
            backchannel_endpoint = found.backchannel_endpoint;
            let keys = KeyStore::new(
                inner.http.clone(),
                found.jwks_uri,
                settings.jwks_ttl,
                settings.refetch_interval,
            );
            (found.issuer, keys, found.clock)
        };
        let (loaded, jwks_clock) = keys.load().await?;
        clock = clock.or(jwks_clock);
        if settings.check_clock
            && let Some(reading) = &clock
            && let Err(e) = check_clock(&issuer, reading, SystemTime::now(), inner.leeway)
        {
            if strict {
                return Err(e);
            }
            self.report(&e);
        }
        tracing::debug!(target: "concierge_guard", %issuer, keys = loaded, "issuer connected");
        let connected = Connected {
            rules: ClaimRules {
                issuer,
                audiences: inner.audiences.clone(),
                leeway: inner.leeway,
                mapping: config.claims.clone(),
                hierarchy: inner.hierarchy.clone(),
            },
            keys,
            token_endpoint,
            introspection_endpoint,
            backchannel_endpoint,
        };
        *slot
            .connected
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(connected));
        self.render_metadata();
        Ok(())
    }

    /// Records a problem met at start-up and logs it.
    pub(crate) fn report(&self, error: &BuildError) {
        tracing::error!(target: "concierge_guard", error = %error, "concierge-guard start-up problem");
        *self
            .inner
            .readiness
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
    }

    /// The start-up probes against the first issuer (when connected): may
    /// this client introspect, does the issuer know the resource URI. When
    /// not `strict`, failures are only reported.
    pub(crate) async fn probe(&self, strict: bool) -> Result<(), BuildError> {
        #[cfg(any(feature = "exchange", feature = "introspection"))]
        {
            let result = self.probe_issuer().await;
            if let Err(e) = result {
                if strict {
                    return Err(e);
                }
                self.report(&e);
            }
        }
        let _ = strict;
        Ok(())
    }

    #[cfg(any(feature = "exchange", feature = "introspection"))]
    async fn probe_issuer(&self) -> Result<(), BuildError> {
        let inner = &self.inner;
        let Some(primary) = inner.issuers.first().and_then(|s| s.connected()) else {
            return Ok(());
        };
        #[cfg(feature = "introspection")]
        if inner.introspection != crate::introspect::Introspection::Off {
            let Some(endpoint) = &primary.introspection_endpoint else {
                return Err(BuildError::InvalidSetting(format!(
                    "introspection is on but the metadata of {} names no introspection_endpoint \
                     (give it with Issuer::introspection_endpoint)",
                    primary.rules.issuer
                )));
            };
            if let Some(credentials) = &inner.credentials
                && inner.startup.check_introspection
            {
                probes::introspection(&inner.http, endpoint, credentials).await?;
            }
        }
        if let (Some(credentials), Some(endpoint)) = (&inner.credentials, &primary.token_endpoint)
            && inner.startup.check_registration
        {
            probes::registered(
                &inner.http,
                endpoint,
                credentials,
                &primary.rules.issuer,
                &inner.resource,
            )
            .await?;
        }
        Ok(())
    }
}

/// The background start: connect every issuer, retrying with back-off, run
/// the probes once the first issuer answers, then report readiness. Stops
/// when the guard is dropped.
pub(crate) async fn connect_in_background(inner: Weak<Inner>) {
    let mut delay = Guard::RETRY_MIN;
    let mut probed = false;
    loop {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let guard = Guard { inner };
        let mut pending = false;
        for (index, slot) in guard.inner.issuers.iter().enumerate() {
            if slot.connected().is_some() {
                continue;
            }
            if let Err(e) = guard.connect(index, false).await {
                pending = true;
                tracing::warn!(
                    target: "concierge_guard",
                    issuer = %slot.config.url,
                    error = %e,
                    retry_in_secs = delay.as_secs(),
                    "cannot reach the issuer yet"
                );
                *guard
                    .inner
                    .readiness
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
            }
        }
        if !probed
            && guard
                .inner
                .issuers
                .first()
                .is_some_and(|s| s.connected().is_some())
        {
            probed = true;
            let _ = guard.probe(false).await;
        }
        if !pending {
            guard.mark_ready();
            return;
        }
        drop(guard);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Guard::RETRY_MAX);
    }
}

/// Fails when `now` and the issuer's clock differ by more than `leeway`
/// seconds (pure). The issuer's clock is its `Date` (RFC 9110 §6.6.1) plus
/// the `Age` (RFC 9111 §5.1) a cache held the answer for. An unparseable
/// `Date` is ignored.
pub(crate) fn check_clock(
    issuer: &str,
    reading: &ClockReading,
    now: SystemTime,
    leeway: i64,
) -> Result<(), BuildError> {
    let Ok(date) = httpdate::parse_http_date(&reading.date) else {
        return Ok(());
    };
    let theirs = date + Duration::from_secs(reading.age);
    let (skew, direction) = match now.duration_since(theirs) {
        Ok(ahead) => (ahead.as_secs(), "ahead of"),
        Err(behind) => (behind.duration().as_secs(), "behind"),
    };
    if i64::try_from(skew).unwrap_or(i64::MAX) > leeway {
        let issuer_date = if reading.age > 0 {
            format!("{}, Age: {}", reading.date, reading.age)
        } else {
            reading.date.clone()
        };
        return Err(BuildError::ClockSkew {
            issuer: issuer.to_owned(),
            issuer_date,
            skew_secs: skew,
            direction,
            leeway_secs: leeway,
        });
    }
    Ok(())
}

#[cfg(any(feature = "exchange", feature = "introspection"))]
mod probes {
    use url::Url;

    use crate::client::{Answer, ClientCredentials, post_form};
    use crate::error::BuildError;

    /// Introspects a made-up token once, to learn at start-up rather than on
    /// the first request whether the issuer accepts this client there.
    #[cfg(feature = "introspection")]
    pub(super) async fn introspection(
        http: &reqwest::Client,
        endpoint: &Url,
        credentials: &ClientCredentials,
    ) -> Result<(), BuildError> {
        let form = vec![("token", "concierge-guard-probe".to_owned())];
        match post_form(http, endpoint, credentials, form).await {
            Ok(Answer::Ok(_)) => Ok(()),
            Ok(Answer::Error {
                error, description, ..
            }) if error == "invalid_client" => Err(BuildError::ClientRejected {
                client_id: credentials.client_id().to_owned(),
                endpoint: endpoint.to_string(),
                description: description.unwrap_or_default(),
            }),
            Ok(Answer::Error {
                error, description, ..
            }) => Err(BuildError::IntrospectionNotAllowed {
                client_id: credentials.client_id().to_owned(),
                endpoint: endpoint.to_string(),
                description: description.unwrap_or(error),
            }),
            Err(e) => Err(BuildError::IssuerUnreachable {
                issuer: endpoint.to_string(),
                tried: endpoint.to_string(),
                reason: e,
            }),
        }
    }

    /// Asks for a client-credentials token for `resource` (RFC 8707): an
    /// `invalid_target` answer means the issuer does not know the resource
    /// URI, the commonest misconfiguration (tokens would never carry this
    /// `aud`). `invalid_client` means the credentials are wrong. Any other
    /// refusal (this client may not use the grant, or no scope fits) proves
    /// nothing either way and is only logged. The token obtained, if any, is
    /// dropped.
    pub(super) async fn registered(
        http: &reqwest::Client,
        endpoint: &Url,
        credentials: &ClientCredentials,
        issuer: &str,
        resource: &str,
    ) -> Result<(), BuildError> {
        let form = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("resource", resource.to_owned()),
        ];
        match post_form(http, endpoint, credentials, form).await {
            Ok(Answer::Ok(_)) => Ok(()),
            Ok(Answer::Error {
                error, description, ..
            }) => match error.as_str() {
                "invalid_target" => Err(BuildError::ResourceNotRegistered {
                    issuer: issuer.to_owned(),
                    resource: resource.to_owned(),
                    description: description.unwrap_or_default(),
                }),
                "invalid_client" => Err(BuildError::ClientRejected {
                    client_id: credentials.client_id().to_owned(),
                    endpoint: endpoint.to_string(),
                    description: description.unwrap_or_default(),
                }),
                _ => {
                    tracing::debug!(target: "concierge_guard", %error, "could not check that the issuer knows the resource");
                    Ok(())
                }
            },
            Err(e) => {
                tracing::warn!(target: "concierge_guard", error = %e, "could not check that the issuer knows the resource");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(date: SystemTime, age: u64) -> ClockReading {
        ClockReading {
            date: httpdate::fmt_http_date(date),
            age,
        }
    }

    #[test]
    fn clock_check_adds_the_age_a_cache_held_the_answer() {
        let now = SystemTime::now();
        let ten_min = Duration::from_secs(600);
        // Made ten minutes ago and held by a cache since: the clocks agree.
        assert!(check_clock("i", &reading(now - ten_min, 600), now, 60).is_ok());
        // Without the Age the issuer looks ten minutes behind.
        let err = check_clock("i", &reading(now - ten_min, 0), now, 60).unwrap_err();
        assert!(err.to_string().contains("ahead of"), "{err}");
        // An Age that overshoots makes the issuer look ahead.
        let err = check_clock("i", &reading(now, 600), now, 60).unwrap_err();
        assert!(
            err.to_string().contains("behind") && err.to_string().contains("Age: 600"),
            "{err}"
        );
        assert!(
            check_clock(
                "i",
                &ClockReading {
                    date: "garbage".into(),
                    age: 0
                },
                now,
                60
            )
            .is_ok()
        );
    }
}
